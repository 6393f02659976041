"""BoLID core library: host-agnostic (torch, numpy, safetensors, ultralytics; never ComfyUI).

Modules are imported on demand so that ``import bolid_lib`` stays cheap; see DESIGN in the README.
Shape letters used across the library: B batch, V views, K keypoints (17), H, W image size,
C channels, N tokens, D width.
"""

__version__ = "0.1.0"
