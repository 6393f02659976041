"""The bad-input catalogue: every case a graph in ComfyUI's API format, with the exact error it must produce.

Each ``Case`` names the node that must report the error, a regex for what was wrong and one for the fix
(reliability_lib.Case). Cases with ``node=None`` are odd but valid inputs the pack must accept. File keys refer
to ``FILES`` below (placed by the fixture in test_catalogue.py under the booted ComfyUI's models/input folders).

Legend of the small graphs: LoadImage -> (pose model) -> BoLIDPoseKeypoints -> BoLIDGaussianWeighting ->
BoLIDBodyEncode -> BoLIDSaveBody; BoLIDAdapterLoader + a test-only reduced-width SDXL MODEL -> BoLIDApply ->
KSampler (1 step, 64x64) -> TestOnlyBoLIDLatentStats.
"""

from __future__ import annotations

from reliability_lib import Case, HostView, pose_keypoint_json

# --- prompt building ------------------------------------------------------------------------------


class G:
    """A tiny API-prompt builder: ``g.add("LoadImage", image="x.png")`` returns the node id; ``g[id, k]`` a link."""

    def __init__(self):
        self.prompt: dict = {}

    def add(self, class_type: str, **inputs) -> str:
        nid = str(len(self.prompt) + 1)
        self.prompt[nid] = {"class_type": class_type, "inputs": inputs}
        return nid

    def __getitem__(self, ref) -> list:
        nid, index = ref if isinstance(ref, tuple) else (ref, 0)
        return [nid, index]


# Widget values of the files the fixture places (folder-relative names, as the combos list them).
POSE = "pose/rel_pose.pt"
IMG = "rel_noise64.png"          # 64x64 RGB noise
IMG_B = "rel_noise64b.png"       # another 64x64
IMG_WIDE = "rel_wide96x64.png"   # 96 wide, 64 high
IMG_BIG = "rel_noise128.png"     # 128x128 (same aspect as IMG)
ADAPTER_BODY = "rel_adapter_body.safetensors"        # BoLID adapter, body branch D=32, widths (64, 128)
ADAPTER_BOTH = "rel_adapter_both.safetensors"        # ref plain (ViT-H 1024) + body D=32
ADAPTER_NARROW = "rel_adapter_narrow.safetensors"    # body branch for widths (32, 64): wrong for the test UNet
IP_PLAIN = "[ipadapter] rel_ip_plain_h.safetensors"  # IP-Adapter SDXL (plain, ViT-H) of widths (64, 128)
VAE = "rel_body_vae.safetensors"
BODY = "rel_body32.safetensors"                       # Body-ID D=32 from VAE
PERSON_CONF = 0.0       # random-weight YOLO: every image "has a person" at conf 0
NOBODY_CONF = 0.25      # ... and none at the default threshold


def pose_chain(g: G, image: list, *, conf=PERSON_CONF, on_missing="skip", person="largest", person_index=0,
               model_name=POSE) -> str:
    loader = g.add("BoLIDPoseModelLoader", model_name=model_name)
    return g.add("BoLIDPoseKeypoints", image=image, pose_model=g[loader], conf=conf, visibility=0.0 if conf == 0 else 0.5,
                 person=person, person_index=person_index, on_missing=on_missing)


def load(g: G, name: str = IMG) -> list:
    return g[g.add("LoadImage", image=name)]


def weighting(g: G, image: list, pose=None, pose_keypoint=None, sigma=0.1, alpha=0.2, sigma_mode="relative") -> str:
    inputs = dict(image=image, sigma=sigma, sigma_mode=sigma_mode, alpha=alpha)
    if pose is not None:
        inputs["pose"] = pose
    if pose_keypoint is not None:
        inputs["pose_keypoint"] = pose_keypoint
    return g.add("BoLIDGaussianWeighting", **inputs)


def channels(g: G, image: list, c: int, batch: int = -1) -> list:
    return g[g.add("TestOnlyBoLIDImageChannels", image=image, channels=c, batch=batch)]


def encode(g: G, views: list, pose: list, vae=VAE) -> str:
    v = g.add("BoLIDBodyVAELoader", vae_name=vae)
    return g.add("BoLIDBodyEncode", views=views, pose=pose, body_vae=g[v], mode="mean", seed=0, views_per_chunk=8)


def preview_body(g: G, body: list) -> str:
    return g.add("BoLIDBodyPreview", body=body)


def apply_graph(*, model="TestOnlyBoLIDSDXLModel", adapter=ADAPTER_BODY, body=BODY, image=None, clip=None,
                lambda_ref=1.0, lambda_body=1.0, start_at=0.0, end_at=1.0, batch=1, extra=None,
                clip_vision_output=False) -> dict:
    """MODEL + adapter (+ Body-ID, + reference image with CLIP vision) -> BoLIDApply (-> 1-step KSampler -> sink)."""
    g = G()
    m = g.add(model)
    a = g.add("BoLIDAdapterLoader", adapter_name=adapter)
    inputs = dict(model=g[m], adapter=g[a], lambda_ref=lambda_ref, lambda_body=lambda_body, start_at=start_at, end_at=end_at)
    if body is not None:
        inputs["body"] = g[g.add("BoLIDLoadBody", body_name=body)]
    if image is not None:
        imgs = [load(g, n) for n in image]
        img = imgs[0]
        for other in imgs[1:]:
            img = g[g.add("ImageBatch", image1=img, image2=other)]
        if clip_vision_output:
            cv = g.add("TestOnlyBoLIDClipVision", kind=clip or "h")
            inputs["clip_vision_output"] = g[g.add("CLIPVisionEncode", clip_vision=g[cv], image=img, crop="center")]
        else:
            inputs["image"] = img
            if clip is not None:
                inputs["clip_vision"] = g[g.add("TestOnlyBoLIDClipVision", kind=clip)]
    inputs.update(extra or {})
    patched = g.add("BoLIDApply", **inputs)
    # Without a sampler nothing consumes the patched model, and ComfyUI would not run the patch node.
    cond = g.add("TestOnlyBoLIDConditioning", seed=0)
    latent = g.add("EmptyLatentImage", width=64, height=64, batch_size=batch)
    ks = g.add("KSampler", model=g[patched], seed=0, steps=1, cfg=2.0, sampler_name="euler", scheduler="normal",
               positive=g[cond, 0], negative=g[cond, 1], latent_image=g[latent], denoise=1.0)
    g.add("TestOnlyBoLIDLatentStats", samples=g[ks])
    return g.prompt


# --- prompts --------------------------------------------------------------------------------------


def p_pose_loader(name: str):
    def build(env):
        g = G()
        pose_chain(g, load(g), model_name=name)
        return g.prompt
    return build


def p_pose(image_fn, **kw):
    def build(env):
        g = G()
        pose_chain(g, image_fn(g), **kw)
        return g.prompt
    return build


def p_weighting(image_fn=None, *, pose="node", pose_keypoint=None, **kw):
    """pose: "node" (a pose chain on the same image), "other:<name>" (a pose found on another picture), None."""
    def build(env):
        g = G()
        img = image_fn(g) if image_fn else load(g)
        pose_link = None
        if pose == "node":
            pose_link = g[pose_chain(g, img)]
        elif isinstance(pose, str) and pose.startswith("other:"):
            pose_link = g[pose_chain(g, load(g, pose.split(":", 1)[1]))]
        pk = g[g.add("TestOnlyBoLIDPoseKeypointJSON", pose_json=pose_keypoint)] if pose_keypoint is not None else None
        weighting(g, img, pose=pose_link, pose_keypoint=pk, **kw)
        return g.prompt
    return build


def p_encode(*, image=IMG, pose_image=None, conf=PERSON_CONF, vae=VAE):
    def build(env):
        g = G()
        img = load(g, image)
        pose = pose_chain(g, load(g, pose_image) if pose_image else img, conf=conf)
        w = weighting(g, img, pose=g[pose])
        preview_body(g, g[encode(g, g[w, 0], g[pose], vae=vae)])
        return g.prompt
    return build


def p_vae_loader(name: str):
    def build(env):
        g = G()
        g.add("BoLIDBodyPreview", body=g[encode(g, load(g), g[pose_chain(g, load(g))], vae=name)])
        return g.prompt
    return build


def p_load_body(name: str):
    def build(env):
        g = G()
        preview_body(g, g[g.add("BoLIDLoadBody", body_name=name)])
        return g.prompt
    return build


def p_save_body(name: str, if_exists: str = "increment"):
    def build(env):
        g = G()
        g.add("BoLIDSaveBody", body=g[g.add("BoLIDLoadBody", body_name=BODY)], name=name, if_exists=if_exists)
        return g.prompt
    return build


def p_blend(a: str, b: str, mode: str = "weighted_mean"):
    def build(env):
        g = G()
        b1, b2 = g.add("BoLIDLoadBody", body_name=a), g.add("BoLIDLoadBody", body_name=b)
        blend = g.add("BoLIDBlendBodies", body_1=g[b1], body_2=g[b2], mode=mode, t=0.5,
                      weight_1=1.0, weight_2=1.0, weight_3=1.0, weight_4=1.0)
        preview_body(g, g[blend])
        return g.prompt
    return build


def p_apply(**kw):
    return lambda env: apply_graph(**kw)


def p_fidelity(*, images=None, reference=True, empty=False):
    def build(env):
        g = G()
        img = load(g, images or IMG)
        if empty:
            img = channels(g, img, 3, batch=0)
        loader = g.add("BoLIDPoseModelLoader", model_name=POSE)
        inputs = dict(images=img, pose_model=g[loader], conf=PERSON_CONF, visibility=0.0)
        if reference:
            inputs["reference_image"] = load(g, IMG_B)
        g.add("BoLIDBodyFidelity", **inputs)
        return g.prompt
    return build


# --- per-case changes to the host (undone after the case) ---------------------------------------------


def folder_replaced(key: str, make):
    """Point model folder ``key`` at ``make(env)`` (a missing folder, or a file where a folder should be)."""
    def setup(env):
        import folder_paths

        saved = folder_paths.folder_names_and_paths[key]
        target, cleanup = make(env)
        folder_paths.folder_names_and_paths[key] = ([str(target)], set(saved[1]))

        def undo():
            folder_paths.folder_names_and_paths[key] = saved
            cleanup()
        return undo
    return setup


def missing_folder(env):
    return env.base_dir / "models" / "rel_missing_folder", (lambda: None)


def file_instead_of_folder(env):
    path = env.base_dir / "models" / "rel_not_a_folder"
    path.write_text("a file where the Body-ID folder should be\n")
    return path, (lambda: path.unlink())


# --- checks on successful runs --------------------------------------------------------------------


def ui_of(result, class_type: str, prompt: dict) -> dict:
    nid = next(n for n, v in prompt.items() if v["class_type"] == class_type)
    return result.outputs.get(nid, {})


def found_flags(result, prompt):
    return ui_of(result, "BoLIDPoseKeypoints", prompt)["bolid_pose"][0]["found"]


def check_all_skipped(result, prompt, env):
    assert found_flags(result, prompt) == [False], "no person at conf 0.25 should give found = 0"


def check_found(result, prompt, env):
    assert all(found_flags(result, prompt)), "at conf 0 the random pose model finds a person everywhere"


def check_weighting_ran(result, prompt, env):
    data = ui_of(result, "BoLIDGaussianWeighting", prompt)["bolid_weighting"][0]
    assert data["sources"], "no live-preview source images were written"


def check_latent_finite(result, prompt, env):
    import json

    stats = json.loads(ui_of(result, "TestOnlyBoLIDLatentStats", prompt)["text"][0])
    assert stats["finite"], f"the sampled latent has NaN/inf: {stats}"


def check_saved(rel: str):
    def check(result, prompt, env):
        path = env.models_dir / "bolid" / "bodies" / rel
        assert path.is_file(), f"{rel} was not written"
    return check


# --- the catalogue --------------------------------------------------------------------------------

NEEDS_POSE = ("pose", "images")
NEEDS_BODY = NEEDS_POSE + ("vae", "bodies", "adapters")
ALL = ("pose", "bad_pose", "images", "vae", "bodies", "bad_bodies", "adapters", "bad_adapters")
PREVIEWS = ("temp/*",)
CASES: list[Case] = [
    # --- pose model loader: files of the wrong kind ---
    Case("pose_loader_detection_model", p_pose_loader("rel_detect.pt"), "BoLIDPoseModelLoader",
         r"detect model", r"pose model with the 17 COCO body keypoints.*yolo11n-pose\.pt", "execution", ("pose", "bad_pose", "images")),
    Case("pose_loader_not_a_yolo_pickle", p_pose_loader("rel_tensors.pt"), "BoLIDPoseModelLoader",
         r"cannot load rel_tensors\.pt as an ultralytics YOLO model", r"YOLO pose model is needed", "execution", ("pose", "bad_pose", "images")),
    Case("pose_loader_truncated", p_pose_loader("rel_truncated.pt"), "BoLIDPoseModelLoader",
         r"rel_truncated\.pt.*(truncated|corrupt)", r"pose model is needed|re-download", "execution", ("pose", "bad_pose", "images")),
    Case("pose_loader_zero_bytes", p_pose_loader("rel_zero.pt"), "BoLIDPoseModelLoader",
         r"rel_zero\.pt.*(empty|truncated)", r"pose model is needed|re-download", "execution", ("pose", "bad_pose", "images")),
    Case("pose_loader_text_named_pt", p_pose_loader("rel_text.pt"), "BoLIDPoseModelLoader",
         r"rel_text\.pt", r"pose model is needed|re-download", "execution", ("pose", "bad_pose", "images")),
    Case("pose_loader_pickle_that_runs_code", p_pose_loader("rel_canary.pt"), "BoLIDPoseModelLoader",
         r"rel_canary\.pt", r"pose model", "execution", ("pose", "bad_pose", "images"),
         note="the guard fails if the canary's payload ran (it creates a file in the sentinel folder)"),
    # --- model files that are not there: the same message at validation on every host (the loaders name their
    # combo in validate_inputs, so a host that checks combo values leaves that input to them) ---
    Case("pose_loader_unknown_name", p_pose_loader("nope/yolo_missing.pt"), "BoLIDPoseModelLoader",
         r"'nope/yolo_missing\.pt' not found", r"put it in \S*models/ultralytics and press R.*yolo11n-pose\.pt.*ultralytics/assets",
         "validation", ("pose", "images")),
    Case("pose_loader_example_model_missing", p_pose_loader("pose/yolo11n-pose.pt"), "BoLIDPoseModelLoader",
         r"'pose/yolo11n-pose\.pt' not found", r"put it in \S*models/ultralytics and press R.*ultralytics/assets releases",
         "validation", ("pose", "images"), note="the example workflows' pose model, not downloaded yet"),
    Case("pose_loader_models_folder_missing", p_pose_loader(POSE), "BoLIDPoseModelLoader",
         r"'pose/rel_pose\.pt' not found", r"put it in \S*rel_missing_folder and press R", "validation", ("images",),
         setup=folder_replaced("ultralytics", missing_folder)),
    Case("pose_loader_name_with_dotdot", p_pose_loader("../../../rel_sentinel/keep.txt"), "BoLIDPoseModelLoader",
         r"'\.\./\.\./\.\./rel_sentinel/keep\.txt' not found", r"put it in \S*models/ultralytics", "validation", ("pose", "images"),
         note="not among the listed files; and ComfyUI's get_full_path keeps a name inside its folder anyway"),
    # --- pose keypoints: images ---
    Case("pose_empty_batch", p_pose(lambda g: channels(g, load(g), 3, batch=0)), "BoLIDPoseKeypoints",
         r"batch is empty", r"connect a node that gives at least one image", "execution", NEEDS_POSE),
    Case("pose_grey_1_channel", p_pose(lambda g: channels(g, load(g), 1)), None, files=NEEDS_POSE,
         check=check_found, writes=PREVIEWS),
    Case("pose_rgba_4_channels", p_pose(lambda g: g[g.add("JoinImageWithAlpha", image=load(g), alpha=[g.add("LoadImage", image="rel_rgba64.png"), 1])]),
         None, files=NEEDS_POSE, check=check_found),
    Case("pose_2_channels", p_pose(lambda g: channels(g, load(g), 2)), "BoLIDPoseKeypoints",
         r"got 2", r"1, 3 or 4 channels", "execution", NEEDS_POSE),
    Case("pose_grey_png_through_loadimage", p_pose(lambda g: load(g, "rel_grey64.png")), None, files=NEEDS_POSE, check=check_found),
    Case("pose_rgba_png_through_loadimage", p_pose(lambda g: load(g, "rel_rgba64.png")), None, files=NEEDS_POSE, check=check_found),
    # --- pose keypoints: no person (policies) ---
    Case("pose_no_person_error_policy", p_pose(lambda g: load(g), conf=NOBODY_CONF, on_missing="error"), "BoLIDPoseKeypoints",
         r"not found in image 0 of the batch", r"lower 'conf'.*on_missing to 'skip'", "execution", NEEDS_POSE),
    Case("pose_no_person_skip_policy", p_pose(lambda g: load(g), conf=NOBODY_CONF, on_missing="skip"), None,
         files=NEEDS_POSE, check=check_all_skipped),
    Case("pose_person_index_absent_error_policy", p_pose(lambda g: load(g), conf=NOBODY_CONF, on_missing="error",
                                                         person="by_index", person_index=3),
         "BoLIDPoseKeypoints", r"person index 3 .*not found in image 0", r"lower 'conf'|on_missing", "execution", NEEDS_POSE),
    Case("pose_unknown_on_missing_choice", p_pose(lambda g: load(g), on_missing="ignore"), "BoLIDPoseKeypoints",
         r"on_missing must be one of.*got 'ignore'", r"'skip', 'error'", "execution", NEEDS_POSE,
         on_combo_checking_host=HostView("validation", r"Value not in list.*on_missing: 'ignore'", r"\['skip', 'error'\]"),
         note="a stale or hand-written API workflow: 0.3.64 lets it reach the node, 0.33 lists the choices itself"),
    Case("pose_unknown_person_choice", p_pose(lambda g: load(g), person="tallest"), "BoLIDPoseKeypoints",
         r"person must be one of.*got 'tallest'", r"'largest', 'most_confident'", "execution", NEEDS_POSE,
         on_combo_checking_host=HostView("validation", r"Value not in list.*person: 'tallest'",
                                         r"\['largest', 'most_confident', 'by_index'\]")),
    # --- Gaussian weighting ---
    Case("weighting_no_pose_connected", p_weighting(pose=None), "BoLIDGaussianWeighting",
         r"neither is connected", r"connect exactly one of 'pose'.*'pose_keypoint'", "execution", NEEDS_POSE),
    Case("weighting_both_poses_connected", p_weighting(pose="node", pose_keypoint=pose_keypoint_json(64, 64, {0: (32, 20)})),
         "BoLIDGaussianWeighting", r"both are connected", r"connect exactly one", "execution", NEEDS_POSE),
    Case("weighting_sigma_zero", p_weighting(sigma=0.0), None, files=NEEDS_POSE, check=check_weighting_ran),
    Case("weighting_sigma_huge", p_weighting(sigma=4096.0), None, files=NEEDS_POSE, check=check_weighting_ran),
    Case("weighting_sigma_above_max", p_weighting(sigma=1e7), "BoLIDGaussianWeighting",
         r"bigger than max", r"max of 4096", "validation", NEEDS_POSE),
    Case("weighting_sigma_negative", p_weighting(sigma=-0.5), "BoLIDGaussianWeighting",
         r"smaller than min", r"min of 0", "validation", NEEDS_POSE),
    Case("weighting_alpha_above_one", p_weighting(alpha=1.5), "BoLIDGaussianWeighting",
         r"bigger than max", r"max of 1", "validation", NEEDS_POSE),
    Case("weighting_unknown_sigma_mode", p_weighting(sigma_mode="percent"), "BoLIDGaussianWeighting",
         r"sigma_mode must be one of.*got 'percent'", r"'relative', 'pixels'", "execution", NEEDS_POSE,
         on_combo_checking_host=HostView("validation", r"Value not in list.*sigma_mode: 'percent'", r"\['relative', 'pixels'\]")),
    Case("weighting_keypoints_outside_image",
         p_weighting(pose=None, pose_keypoint=pose_keypoint_json(64, 64, {0: (-40, 30), 2: (200, 500), 5: (32, 32)})),
         None, files=NEEDS_POSE, check=check_weighting_ran, note="points outside the image only add the tails of their Gaussians"),
    Case("weighting_all_keypoints_outside_image",
         p_weighting(pose=None, pose_keypoint=pose_keypoint_json(64, 64, {0: (-4000, 30), 2: (9000, 500)})),
         None, files=NEEDS_POSE, check=check_weighting_ran),
    Case("weighting_pose_of_another_aspect", p_weighting(lambda g: load(g, IMG_WIDE), pose="other:" + IMG), "BoLIDGaussianWeighting",
         r"pose refers to images of 64x64 but the images are 96x64", r"find the pose on these same images", "execution", NEEDS_POSE),
    Case("weighting_pose_of_another_resolution", p_weighting(lambda g: load(g, IMG_BIG), pose="other:" + IMG), None,
         files=NEEDS_POSE, check=check_weighting_ran, note="same aspect ratio: keypoints are rescaled"),
    Case("weighting_pose_count_mismatch",
         p_weighting(lambda g: g[g.add("RepeatImageBatch", image=load(g), amount=3)],
                     pose_keypoint=pose_keypoint_json(64, 64, {0: (32, 20)})[:-1] + ", " + pose_keypoint_json(64, 64, {0: (30, 20)})[1:],
                     pose=None),
         "BoLIDGaussianWeighting", r"got 3 images but 2 poses", r"one pose per image", "execution", NEEDS_POSE),
    Case("weighting_some_images_without_person",
         p_weighting(lambda g: g[g.add("RepeatImageBatch", image=load(g), amount=2)], pose=None,
                     pose_keypoint='[{"people": [], "canvas_width": 64, "canvas_height": 64}, '
                                   + pose_keypoint_json(64, 64, {0: (32, 20), 1: (32, 30)})[1:]),
         None, files=NEEDS_POSE, check=check_weighting_ran, note="a frame without people gets W_norm = 0"),
    Case("weighting_pose_keypoint_not_a_list", p_weighting(pose=None, pose_keypoint='{"foo": 1}'), "BoLIDGaussianWeighting",
         r"'people'", r"dict with a 'people' list|frame dicts", "execution", NEEDS_POSE),
    Case("weighting_pose_keypoint_wrong_length",
         p_weighting(pose=None, pose_keypoint='[{"people": [{"pose_keypoints_2d": [1, 2, 1, 3, 4, 1]}], "canvas_width": 64, "canvas_height": 64}]'),
         "BoLIDGaussianWeighting", r"got 6 numbers", r"18 OpenPose body points \(54 numbers\)", "execution", NEEDS_POSE),
    Case("weighting_empty_batch", p_weighting(lambda g: channels(g, load(g), 3, batch=0), pose=None,
                                              pose_keypoint=pose_keypoint_json(64, 64, {0: (32, 20)})),
         "BoLIDGaussianWeighting", r"batch is empty", r"at least one image", "execution", NEEDS_POSE),
    # --- Body-ID VAE loader and encoder ---
    Case("vae_loader_given_an_adapter", p_vae_loader(ADAPTER_BODY), "BoLIDBodyVAELoader",
         r"not a Body-ID VAE file.*bolid\.adapter", r"pick|train", "execution", NEEDS_BODY),
    Case("vae_loader_random_safetensors", p_vae_loader("rel_random.safetensors"), "BoLIDBodyVAELoader",
         r"not a Body-ID VAE file.*2 tensors", r"pick|train", "execution", ALL),
    Case("vae_loader_truncated", p_vae_loader("rel_truncated.safetensors"), "BoLIDBodyVAELoader",
         r"not a valid safetensors file|truncated", r"get the file again", "execution", ALL),
    Case("vae_loader_zero_bytes", p_vae_loader("rel_zero.safetensors"), "BoLIDBodyVAELoader",
         r"empty \(0 bytes\)", r"get the file again", "execution", ALL),
    Case("encode_no_person_in_any_view", p_encode(conf=NOBODY_CONF), "BoLIDBodyEncode",
         r"no person was found in any of the 1 views", r"lower the pose detector's confidence|whole person is visible", "execution", NEEDS_BODY),
    Case("encode_pose_of_other_images", p_encode(image=IMG_BIG, pose_image=IMG), "BoLIDBodyEncode",
         r"poses were found on images of size \(64, 64\).*\(128, 128\)", r"weight the same images", "execution", NEEDS_BODY),
    # --- Body-ID files ---
    Case("load_body_given_an_adapter", p_load_body("rel_adapter_as_body.safetensors"), "BoLIDLoadBody",
         r"not a Body-ID file.*bolid\.adapter", r"saved by 'BoLID Save Body-ID'", "execution", ALL),
    Case("load_body_nan", p_load_body("rel_body_nan.safetensors"), "BoLIDLoadBody",
         r"NaN or infinite", r"encode the views again", "execution", ALL),
    Case("load_body_inf", p_load_body("rel_body_inf.safetensors"), "BoLIDLoadBody",
         r"NaN or infinite", r"encode the views again", "execution", ALL),
    Case("load_body_truncated", p_load_body("rel_body_truncated.safetensors"), "BoLIDLoadBody",
         r"not a valid safetensors file", r"get the file again", "execution", ALL),
    Case("load_body_zero_bytes", p_load_body("rel_body_zero.safetensors"), "BoLIDLoadBody",
         r"empty \(0 bytes\)", r"get the file again", "execution", ALL),
    Case("blend_bodies_of_different_vaes", p_blend(BODY, "rel_body32_other_vae.safetensors"), "BoLIDBlendBodies",
         r"different Body-ID VAEs", r"encode all of them with one VAE", "execution", ALL,
         note="an error, not a warning: two VAEs' latent spaces do not align, so their mean is meaningless"),
    Case("blend_bodies_of_different_sizes", p_blend(BODY, "rel_body16.safetensors"), "BoLIDBlendBodies",
         r"different sizes.*D = \[16, 32\]", r"same Body-ID VAE", "execution", ALL),
    Case("load_body_absolute_name", p_load_body("/etc/hostname"), "BoLIDLoadBody",
         r"'/etc/hostname' not found", r"put it in \S*models/bolid/bodies", "validation", ALL),
    Case("load_body_missing_file", p_load_body("my_person.safetensors"), "BoLIDLoadBody",
         r"'my_person\.safetensors' not found", r"put it in \S*models/bolid/bodies and press R.*bolid_build_body_id\.json",
         "validation", ALL, note="a text-only workflow shared before its Body-ID was built here"),
    Case("vae_loader_name_with_dotdot", p_vae_loader("../../../rel_sentinel/keep.txt"), "BoLIDBodyVAELoader",
         r"not found", r"put it in \S*models/bolid", "validation", ALL),
    Case("vae_loader_missing_file", p_vae_loader("bolid_body_vae.safetensors"), "BoLIDBodyVAELoader",
         r"'bolid_body_vae\.safetensors' not found", r"put it in \S*models/bolid and press R.*bolid_lib\.training body-vae",
         "validation", ALL),
    Case("vae_loader_given_a_body_id_by_path", p_vae_loader("bodies/" + BODY), "BoLIDBodyVAELoader",
         r"'bodies/rel_body32\.safetensors' not found", r"put it in \S*models/bolid", "validation", ALL,
         note="files under models/bolid/bodies are Body-IDs: the VAE list leaves them out, and so does its check"),
    # --- saving Body-IDs: names ---
    Case("save_name_dotdot", p_save_body("../../../../rel_sentinel/evil"), "BoLIDSaveBody",
         r"would leave the folder", r"remove '\.\.'", "validation", ALL),
    Case("save_name_absolute", p_save_body("/tmp/bolid_evil_body"), "BoLIDSaveBody",
         r"absolute path", r"relative to", "validation", ALL),
    Case("save_name_empty", p_save_body("   "), "BoLIDSaveBody", r"name is empty", r"type a name", "validation", ALL),
    Case("save_name_refused_characters", p_save_body('alice<1>:"?'), "BoLIDSaveBody",
         r"character filesystems refuse", r"remove it", "validation", ALL),
    Case("save_name_windows_reserved", p_save_body("team/CON"), "BoLIDSaveBody",
         r"Windows refuses", r"choose another name", "validation", ALL),
    Case("save_name_symlink_out_of_folder", p_save_body("rel_link_out/evil"), "BoLIDSaveBody",
         r"resolves outside", r"plain name", "validation", ALL),
    Case("save_existing_name_refuse", p_save_body("rel_exists", "refuse"), "BoLIDSaveBody",
         r"rel_exists\.safetensors exists already", r"choose another name|increment", "execution", ALL),
    Case("save_existing_name_increment", p_save_body("rel_exists", "increment"), None, files=ALL,
         writes=("models/bolid/bodies/rel_exists_0000*.safetensors",), check=check_saved("rel_exists_00001.safetensors")),
    Case("save_unknown_if_exists_choice", p_save_body("rel_other", "overwrite"), "BoLIDSaveBody",
         r"on_exists must be one of.*got 'overwrite'", r"'increment', 'refuse'", "execution", ALL),
    Case("save_into_subfolder", p_save_body("rel_team/alice"), None, files=ALL,
         writes=("models/bolid/bodies/rel_team/alice*.safetensors",), check=check_saved("rel_team/alice.safetensors")),
    Case("save_bodies_folder_is_a_file", p_save_body("alice"), "BoLIDSaveBody",
         r"cannot create the folder", r"check its permissions", "any", ALL,
         setup=folder_replaced("bolid_bodies", file_instead_of_folder),
         note="root ignores permission bits, so an unreadable/unwritable folder is simulated by a file in its place"),
    # --- adapter loader: files of the wrong kind ---
    Case("adapter_loader_sd15_ip_adapter", p_apply(adapter="[ipadapter] rel_sd15.safetensors", body=None, image=[IMG], clip="h"),
         "BoLIDAdapterLoader", r"an SD1\.5 IP-Adapter.*width 768", r"use ip-adapter_sdxl", "execution", ALL),
    Case("adapter_loader_given_a_body_id", p_apply(adapter="rel_body_as_adapter.safetensors"), "BoLIDAdapterLoader",
         r"bolid\.body file.*not an adapter", r"pick a BoLID adapter or an IP-Adapter SDXL file", "execution", ALL),
    Case("adapter_loader_given_the_body_vae", p_apply(adapter=VAE), "BoLIDAdapterLoader",
         r"bolid\.body_vae file.*not an adapter", r"pick a BoLID adapter", "execution", ALL),
    Case("adapter_loader_random_safetensors", p_apply(adapter="rel_random.safetensors"), "BoLIDAdapterLoader",
         r"not an adapter: it is a safetensors file with 2 tensors", r"Pick a BoLID adapter", "execution", ALL),
    Case("adapter_loader_truncated", p_apply(adapter="rel_truncated.safetensors"), "BoLIDAdapterLoader",
         r"not a valid safetensors file", r"get the file again", "execution", ALL),
    Case("adapter_loader_zero_bytes", p_apply(adapter="rel_zero.safetensors"), "BoLIDAdapterLoader",
         r"rel_zero\.safetensors.*(empty|not a valid safetensors)", r"get the file again", "execution", ALL),
    Case("adapter_loader_pickle_bin", p_apply(adapter="[ipadapter] rel_canary.bin"), "BoLIDAdapterLoader",
         r"pickle file.*can run arbitrary code", r"\.safetensors release", "execution", ALL,
         note="the canary inside would create a file in the sentinel folder if it were unpickled"),
    Case("adapter_loader_name_with_dotdot", p_apply(adapter="[ipadapter] ../../../rel_sentinel/keep.txt"), "BoLIDAdapterLoader",
         r"not found", r"put it in \S*models/ipadapter", "validation", ALL),
    Case("adapter_loader_missing_bolid_file", p_apply(adapter="bolid_adapter_sdxl.safetensors"), "BoLIDAdapterLoader",
         r"'bolid_adapter_sdxl\.safetensors' not found", r"put it in \S*models/bolid and press R.*bolid_lib\.training adapter",
         "validation", ALL),
    # (a name no other test installs: the host tier puts ip-adapter_sdxl_vit-h.safetensors in the shared models folder)
    Case("adapter_loader_missing_ipadapter_file", p_apply(adapter="[ipadapter] ip-adapter_sdxl_vit-h_not_installed.safetensors",
                                                          body=None, image=[IMG], clip="h"), "BoLIDAdapterLoader",
         r"'ip-adapter_sdxl_vit-h_not_installed\.safetensors' not found", r"put it in \S*models/ipadapter and press R.*h94/IP-Adapter",
         "validation", ALL),
    # --- apply: models, CLIP vision, Body-IDs, settings ---
    Case("apply_sd15_model", p_apply(model="TestOnlyBoLIDSD15Model"), "BoLIDApply",
         r"not an SDXL UNet|SD1\.5", r"load an SDXL", "execution", ALL),
    Case("apply_adapter_of_other_widths", p_apply(adapter=ADAPTER_NARROW), "BoLIDApply",
         r"widths \(32, 64\).*\(64, 128\)", r"load the adapter made for this model", "execution", ALL, model=True),
    Case("apply_clip_vision_bigg_for_vit_h_adapter", p_apply(adapter=IP_PLAIN, body=None, image=[IMG], clip="bigg"), "BoLIDApply",
         r"needs a ViT-H.*gives 1280-dim", r"load the matching CLIP vision model", "execution", ALL, model=True),
    Case("apply_clip_vision_output_of_bigg", p_apply(adapter=IP_PLAIN, body=None, image=[IMG], clip="bigg", clip_vision_output=True),
         "BoLIDApply", r"needs a ViT-H.*gives 1280-dim", r"load the matching CLIP vision model", "execution", ALL),
    Case("apply_image_without_clip_vision", p_apply(adapter=IP_PLAIN, body=None, image=[IMG]), "BoLIDApply",
         r"needs a CLIP vision model", r"connect a Load CLIP Vision node", "execution", ALL),
    Case("apply_body_of_wrong_size", p_apply(body="rel_body16.safetensors"), "BoLIDApply",
         r"Body-IDs of width D=32.*\(1, 16\)|\(16,\)", r"Body-ID VAE this adapter was trained with", "execution", ALL, model=True),
    Case("apply_body_to_image_only_adapter", p_apply(adapter=IP_PLAIN), "BoLIDApply",
         r"no body branch", r"load a BoLID adapter trained with a body branch|disconnect the Body-ID", "execution", ALL),
    Case("apply_no_branch_connected", p_apply(body=None), "BoLIDApply",
         r"needs at least one branch", r"connect a Body-ID", "execution", ALL),
    Case("apply_start_after_end", p_apply(start_at=0.8, end_at=0.2), "BoLIDApply",
         r"start_at \(0\.8\) is after end_at \(0\.2\)", r"make start_at smaller", "validation", ALL),
    Case("apply_lambda_negative_in_range", p_apply(lambda_body=-1.0), None, files=ALL, model=True,
         check=check_latent_finite, note="λ down to -1 is allowed: it pushes away from the body (documented on the input)"),
    Case("apply_lambda_below_min", p_apply(lambda_body=-50.0), "BoLIDApply",
         r"smaller than min", r"min of -1", "validation", ALL),
    Case("apply_lambda_very_large", p_apply(lambda_body=1e6), "BoLIDApply",
         r"bigger than max", r"max of 3", "validation", ALL),
    Case("apply_unknown_ref_batch_rule", p_apply(extra={"ref_batch": "median"}), "BoLIDApply",
         r"ref_batch.*median", r"average.*one per latent", "any", ALL),
    Case("apply_unknown_blocks_for_choice", p_apply(extra={"blocks_for": "all", "block_output": 0.0}), "BoLIDApply",
         r"blocks_for.*all", r"both.*body.*ref", "any", ALL),
    Case("apply_refs_do_not_match_latent_batch",
         p_apply(adapter=IP_PLAIN, body=None, image=[IMG, IMG_B], clip="h", batch=3, extra={"ref_batch": "one per latent"}),
         "KSampler", r"2 reference images for a batch of 3 latents", r"give one reference, as many references as latents, or choose 'average'",
         "execution", ALL, model=True, note="raised inside sampling, so ComfyUI reports it on the KSampler"),
    Case("apply_good_text_only_mode", p_apply(), None, files=ALL, model=True, check=check_latent_finite),
    Case("apply_good_image_mode_two_refs_averaged", p_apply(adapter=ADAPTER_BOTH, image=[IMG, IMG_B], clip="h", batch=2),
         None, files=ALL, model=True, check=check_latent_finite),
    # --- evaluation ---
    Case("fidelity_no_reference", p_fidelity(reference=False), "BoLIDBodyFidelity",
         r"connect exactly one of reference_image and reference_pose", r"now: neither", "execution", NEEDS_POSE),
    Case("fidelity_empty_batch", p_fidelity(empty=True), "BoLIDBodyFidelity",
         r"batch is empty", r"at least one image", "execution", NEEDS_POSE),
    Case("fidelity_reference_of_another_size", p_fidelity(images=IMG_WIDE), None, files=NEEDS_POSE),
]

assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
