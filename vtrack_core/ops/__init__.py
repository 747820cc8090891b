"""Building blocks several trackers share (a module used by one tracker lives in that
tracker's module; backbones live in `vtrack_core.backbones`):

* `crops`: device crops and their CPU twin for training data (all deep trackers, training).
* `maps`: Gaussian labels and Hann windows (SiamFC, RAR, FCNT).
* `scales`: the scale pyramid with its penalty and damped update (SiamFC, RAR).
* `sampling`: candidate and training boxes around a target (FDN, FDN training, FCNT).
* `redetect`: the window searched while a target is LOST, growing each frame (SiamFC, FDN),
  and its tiling by normal-size patches (RAR, FCNT).
"""
