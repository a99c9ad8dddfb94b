"""Pure plotting functions: data in, a figure or HoloViews element out (no Panel here)."""
