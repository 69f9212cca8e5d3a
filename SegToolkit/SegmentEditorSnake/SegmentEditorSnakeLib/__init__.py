"""The Snake Segment Editor effect of SegToolkit."""
