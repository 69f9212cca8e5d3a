"""Label tables: label value -> segment name and colour.

A label table travels with every label map SegToolkit writes (``.seg.nrrd`` headers, measurement reports, the
Slicer segments). It can be read from a small JSON file in any of the common spellings:

* ``{"1": "liver", "2": "spleen"}``                      (value -> name)
* ``{"liver": 1, "spleen": 2}``                          (name -> value, nnU-Net ``dataset.json`` style)
* ``{"labels": {...}}``                                  (either of the above under a ``labels`` key)
* ``{"1": {"name": "liver", "color": [0.8, 0.4, 0.3]}}`` (with colours, RGB in 0..1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..errors import InputError
from .json_files import interpreting, read_json, require

Color = tuple[float, float, float]

# Distinct, print-friendly colours (RGB 0..1), similar in spirit to Slicer's generic anatomy colours.
PALETTE: tuple[Color, ...] = (
    (0.50, 0.68, 0.50), (0.95, 0.84, 0.57), (0.69, 0.48, 0.40), (0.44, 0.76, 0.84), (0.86, 0.25, 0.25),
    (0.55, 0.37, 0.80), (0.93, 0.60, 0.20), (0.25, 0.50, 0.85), (0.90, 0.90, 0.35), (0.35, 0.80, 0.55),
    (0.80, 0.45, 0.65), (0.60, 0.60, 0.60), (0.30, 0.70, 0.70), (0.75, 0.30, 0.10), (0.45, 0.30, 0.60),
    (0.70, 0.85, 0.30), (0.95, 0.45, 0.45), (0.20, 0.35, 0.55), (0.85, 0.70, 0.85), (0.40, 0.55, 0.20),
)


def default_color(value: int) -> Color:
    """A stable colour for a label value."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


@dataclass(frozen=True)
class Label:
    """One label: its integer value in the label map, a name and an RGB colour (0..1)."""

    value: int
    name: str
    color: Color


@dataclass
class LabelTable:
    """An ordered mapping from label value (> 0) to :class:`Label`."""

    labels: dict[int, Label] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Label]:
        return iter(sorted(self.labels.values(), key=lambda label: label.value))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, value: object) -> bool:
        return value in self.labels

    def get(self, value: int) -> Label:
        """The label for ``value``; a default name and colour when the table does not know it."""
        value = int(value)
        return self.labels.get(value) or Label(value, f"Label {value}", default_color(value))

    def name(self, value: int) -> str:
        return self.get(value).name

    def values(self) -> list[int]:
        return sorted(self.labels)

    def add(self, value: int, name: str | None = None, color: Color | None = None) -> Label:
        """Add (or replace) a label, filling in a default name and colour."""
        value = int(value)
        label = Label(value, name or f"Label {value}", tuple(color) if color else default_color(value))
        self.labels[value] = label
        return label

    def add_unique(self, value: int, name: str | None = None, color: Color | None = None,
                   source: str = "label table") -> Label:
        """Add a label whose value must not be in the table yet (:class:`InputError` naming both entries)."""
        if int(value) in self.labels:
            first = self.labels[int(value)].name
            raise InputError(f"{source}: label value {int(value)} is given to both {first!r} and {name!r}; give each "
                             "segment its own value")
        return self.add(value, name, color)

    def covering(self, values: Iterable[int]) -> LabelTable:
        """A copy that also names every value in ``values`` (unknown values get defaults)."""
        table = LabelTable(dict(self.labels))
        for value in values:
            if int(value) > 0 and int(value) not in table.labels:
                table.add(int(value))
        return table

    def to_json_dict(self) -> dict[str, dict]:
        return {str(label.value): {"name": label.name, "color": list(label.color)} for label in self}

    @classmethod
    def from_names(cls, names: Mapping[int, str]) -> LabelTable:
        table = cls()
        for value, name in names.items():
            table.add(int(value), name)
        return table

    @classmethod
    def from_mapping(cls, data: Mapping, source: str = "label table") -> LabelTable:
        """Parse any of the spellings listed in the module docstring; a label value given twice is an error (the
        voxels of both entries would carry one name, the wrong one for the other)."""
        with interpreting(source, "label table", "see the accepted forms in 'segtoolkit --help' of the command"):
            require(isinstance(data, Mapping), "expected a JSON object mapping label values to names")
            if isinstance(data.get("labels"), Mapping):
                data = data["labels"]
            table = cls()
            for key, entry in data.items():
                value, name, color = _parse_entry(key, entry, source)
                if value > 0:
                    table.add_unique(value, name, color, source)
        return table

    @classmethod
    def from_json(cls, path: Path | str) -> LabelTable:
        """Read a label table JSON file (see the module docstring for accepted forms)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: label names file not found")
        return cls.from_mapping(read_json(path), str(path))


def _parse_entry(key: str, entry: object, source: str) -> tuple[int, str, Color | None]:
    """One ``key: entry`` pair of a label JSON object as (value, name, colour)."""
    color = None
    if isinstance(entry, Mapping):
        name = str(entry.get("name", key))
        color = entry.get("color")
        value_text = entry.get("value", key)
    elif isinstance(entry, (int, float)) and not isinstance(entry, bool) and not _is_int(key):
        name, value_text = key, entry  # nnU-Net style: name -> value
    else:
        name, value_text = str(entry), key
    if not _is_int(value_text):
        raise InputError(f"{source}: label value {value_text!r} is not an integer")
    if color is not None and (not isinstance(color, (list, tuple)) or len(color) != 3
                              or not all(_is_unit_number(c) for c in color)):
        raise InputError(f"{source}: colour of label {name!r} must be three numbers in 0..1, like [0.8, 0.4, 0.3]")
    return int(float(value_text)), name, tuple(float(c) for c in color) if color else None


def _is_unit_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _is_int(text: object) -> bool:
    try:
        return float(text) == int(float(text))
    except (TypeError, ValueError, OverflowError):
        return False
