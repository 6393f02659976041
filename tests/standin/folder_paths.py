"""Stand-in for ComfyUI's folder_paths: the model folder registry, with empty folders."""

import os
import tempfile

base_path = tempfile.mkdtemp(prefix="bolid_standin_")
models_dir = os.path.join(base_path, "models")
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths = {
    name: ([os.path.join(models_dir, name)], supported_pt_extensions)
    for name in ("checkpoints", "clip_vision", "ipadapter", "loras", "vae")
}


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name):
    out = []
    paths, exts = folder_names_and_paths[folder_name]
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def get_full_path(folder_name, filename):
    for root in get_folder_paths(folder_name):
        p = os.path.join(root, filename)
        if os.path.isfile(p):
            return p
    return None


def get_output_directory():
    return os.path.join(base_path, "output")


def get_temp_directory():
    return os.path.join(base_path, "temp")


def get_input_directory():
    return os.path.join(base_path, "input")
