# Stand-in: the ComfyUI version whose node API the stand-in copies.
__version__ = "0.3.64"
