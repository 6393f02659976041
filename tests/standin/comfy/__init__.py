"""Stand-in: an empty comfy package (the pack checks that ComfyUI is importable; nodes import comfy.* only when they run)."""
