"""Run BlazePose (mediapipe 0.10.14, full model) on crops of photos; called by reallib.run_blazepose.

Runs in the BlazePose environment under the asset cache (never in the hosts' environments):

    <cache>/mp-venv/bin/python blazepose_job.py jobs.json out.json

jobs.json: [{"image": path, "box": [x0, y0, x1, y1] or null}]; out.json: per job the 33 landmarks
[x, y, visibility] in pixels of the whole photo, or null where BlazePose found nobody.
"""

import json
import sys

import cv2
import mediapipe as mp
import numpy as np


def main(job_path: str, out_path: str) -> None:
    jobs = json.load(open(job_path))
    results = []
    # static_image_mode: every crop is detected afresh (no tracking between jobs); model_complexity 1 is
    # pose_landmark_full.tflite.
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.5) as pose:
        images = {}
        for job in jobs:
            if job["image"] not in images:
                images[job["image"]] = cv2.cvtColor(cv2.imread(job["image"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            image = images[job["image"]]
            h, w = image.shape[:2]
            x0, y0, x1, y1 = job.get("box") or (0, 0, w, h)
            x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
            x1, y1 = min(w, int(round(x1))), min(h, int(round(y1)))
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            found = pose.process(crop).pose_landmarks if crop.size else None
            if found is None:
                results.append(None)
                continue
            cw, ch = x1 - x0, y1 - y0
            results.append([[x0 + lm.x * cw, y0 + lm.y * ch, lm.visibility] for lm in found.landmark])
    json.dump(results, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
