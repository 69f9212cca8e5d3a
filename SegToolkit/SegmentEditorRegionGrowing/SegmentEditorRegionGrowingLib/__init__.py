"""The Region growing Segment Editor effect of SegToolkit."""
