#!/usr/bin/env python3
# OpenCV's selective search (opencv-contrib ximgproc: createSelectiveSearchSegmentation,
# switchToSelectiveSearchFast: HSV and Lab, k = 150 and 300, sigma 0.8, the colour+texture+size+fill
# and texture+size+fill strategies) on images, for bench/proposals.js. Reads image paths from stdin,
# one a line; for each prints one line: "<ms> <cpu ms> <x1,y1,x2,y2,...>" (0-based inclusive boxes,
# as OpenCV ranks them). The times are time.perf_counter and time.process_time around setBaseImage +
# switchToSelectiveSearchFast + process (the image is decoded before, untimed). Debian: apt-get install python3-opencv.
import sys
import time

import cv2

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
cv2.setNumThreads(threads)
ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
for line in sys.stdin:
    path = line.strip()
    if not path:
        continue
    img = cv2.imread(path)
    t, c = time.perf_counter(), time.process_time()
    ss.setBaseImage(img)
    ss.switchToSelectiveSearchFast()
    rects = ss.process()
    ms, cpu = (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3
    flat = ','.join(f'{x},{y},{x + w - 1},{y + h - 1}' for x, y, w, h in rects.tolist())
    print(f'{ms:.3f} {cpu:.3f} {flat}', flush=True)
