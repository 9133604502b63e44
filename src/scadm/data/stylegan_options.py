"""The generated-face dataset's settings that `scadm prepare stylegan-faces --help` shows, in a
module with no heavy imports: the `scadm` command builds its parser without importing torch."""

LICENCE = (
    "MobileStyleGAN derives from NVIDIA's StyleGAN2-FFHQ (NVIDIA Source Code License-NC) "
    "trained on FFHQ (CC BY-NC-SA 4.0): the generator, its images and anything trained on "
    "them are for non-commercial research only"
)
BACKENDS = ("auto", "openvino", "torch")
DEFAULT_PSI = 0.8
TEST_EVERY = 20  # 5 % held out
DEFAULT_BATCH = 4
