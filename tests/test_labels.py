import numpy as np
import pytest
import torch

from scadm.errors import InputError
from scadm.labels import (
    CELEBAMASK_HQ,
    NUM_CLASSES,
    LabelSet,
    auto_palette,
    colorize,
    label_set_from_config,
    one_hot,
    overlay,
)


def test_celebamask_hq_has_the_authors_class_order_and_19_distinct_colours():
    assert CELEBAMASK_HQ.num_classes == NUM_CLASSES == 19
    assert CELEBAMASK_HQ.names[:5] == ("bg", "skin", "nose", "eye_g", "l_eye")
    assert CELEBAMASK_HQ.names[13] == "hair" and CELEBAMASK_HQ.names[18] == "cloth"
    assert len(set(CELEBAMASK_HQ.palette)) == 19
    assert CELEBAMASK_HQ.palette[0] == (0, 0, 0)
    assert CELEBAMASK_HQ.palette[13] == (0, 0, 204)  # hair, as in the dataset's colour masks


def test_index_accepts_names_ints_and_digit_strings():
    assert CELEBAMASK_HQ.index("hair") == 13
    assert CELEBAMASK_HQ.index(" L_Eye ") == 4
    assert CELEBAMASK_HQ.index(7) == 7
    assert CELEBAMASK_HQ.index("18") == 18


@pytest.mark.parametrize("bad", ["beard", 19, "-1", -1, True])
def test_index_rejects_unknown_classes_and_lists_valid_names(bad):
    with pytest.raises(InputError) as e:
        CELEBAMASK_HQ.index(bad)
    msg = str(e.value)
    assert ("hair" in msg and "l_eye" in msg) or "out of range" in msg


def test_parse_parts_expands_groups_and_deduplicates_in_order():
    assert CELEBAMASK_HQ.parse_parts("hair,l_eye,u_lip") == [13, 4, 11]
    assert CELEBAMASK_HQ.parse_parts("hair, eyes, 13, l_eye") == [13, 4, 5]
    assert CELEBAMASK_HQ.parse_parts(["brows", "lips", 2]) == [6, 7, 11, 12, 2]
    assert CELEBAMASK_HQ.parse_parts("mouth_all,ears") == [10, 11, 12, 8, 9]
    assert CELEBAMASK_HQ.parse_parts("all") == list(range(19))


@pytest.mark.parametrize("spec", ["", " , ", [], "hair,nosee"])
def test_parse_parts_rejects_empty_and_unknown_specs(spec):
    with pytest.raises(InputError):
        CELEBAMASK_HQ.parse_parts(spec)


def test_group_aliases_need_their_classes_in_the_label_set():
    other = label_set_from_config(["bg", "car", "eyes"])
    assert other.parse_parts("eyes") == [2]  # a class name wins over the group
    with pytest.raises(InputError, match="lips"):
        other.parse_parts("lips")


def test_label_set_from_config_generates_distinct_palette_starting_black():
    ls = label_set_from_config([f"c{i}" for i in range(300)])
    assert ls.palette[0] == (0, 0, 0)
    assert len(set(ls.palette)) == 300
    assert auto_palette(19) == auto_palette(19)


def test_label_set_rejects_inconsistent_definitions():
    with pytest.raises(InputError, match="colours"):
        LabelSet(names=("a", "b"), palette=((0, 0, 0),))
    with pytest.raises(InputError, match="distinct"):
        LabelSet(names=("a", "b"), palette=((0, 0, 0), (0, 0, 0)))
    with pytest.raises(InputError, match="duplicate"):
        LabelSet(names=("a", "A"), palette=((0, 0, 0), (1, 1, 1)))


def test_one_hot_then_argmax_round_trips():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 19, (2, 8, 6), generator=g)
    oh = one_hot(labels, 19)
    assert oh.shape == (2, 19, 8, 6) and oh.dtype == torch.float32
    assert torch.equal(oh.sum(1), torch.ones(2, 8, 6))
    assert torch.equal(oh.argmax(1), labels)
    assert one_hot(labels[0], 19).shape == (1, 19, 8, 6)


def test_one_hot_reports_max_label_and_class_count():
    labels = torch.zeros(4, 4, dtype=torch.int64)
    labels[1, 2] = 23
    with pytest.raises(InputError, match=r"23.*< 19.*19 classes"):
        one_hot(labels, 19)
    with pytest.raises(InputError, match=">= 0"):
        one_hot(labels - 30, 19)
    with pytest.raises(InputError, match="integer"):
        one_hot(labels.float(), 19)


def test_colorize_uses_the_palette_and_overlay_blends():
    labels = np.array([[0, 13], [1, 18]])
    rgb = colorize(labels)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == CELEBAMASK_HQ.palette[13]
    assert tuple(rgb[1, 1]) == CELEBAMASK_HQ.palette[18]
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    assert np.array_equal(overlay(image, labels, alpha=0.0), image)
    assert np.array_equal(overlay(image, torch.from_numpy(labels), alpha=1.0), rgb)
    with pytest.raises(InputError):
        colorize(np.array([[19]]))


def test_label_set_from_config_recognises_celebamask_hq():
    ls = label_set_from_config(list(CELEBAMASK_HQ.names), [list(c) for c in CELEBAMASK_HQ.palette])
    assert ls is CELEBAMASK_HQ
