"""Stand-in for comfy_api.latest.ui: constructors only (nodes are never executed on the stand-in)."""


class _UIOutput:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def as_dict(self):
        return {}


class PreviewImage(_UIOutput):
    pass


class PreviewMask(_UIOutput):
    pass


class PreviewText(_UIOutput):
    pass


class SavedResult(dict):
    def __init__(self, filename, subfolder, type):
        super().__init__(filename=filename, subfolder=subfolder, type=type)


class SavedImages(_UIOutput):
    pass
