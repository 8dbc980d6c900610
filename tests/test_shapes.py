"""Output-length arithmetic and argument normalisation, checked by hand."""

import pytest

from tf_conv3dt import shapes
from markers import smoke

# In the oldest-TensorFlow job too (README, "Supported versions").
pytestmark = smoke

# (input, kernel, stride, padding, output_padding, dilation) -> length, each
# row worked out on paper from the definition in the module docstring.
OUTPUT_LENGTH_ROWS = [
    (10, 2, 2, "valid", None, 1, 20),   # the reference example's depth
    (5, 3, 1, "valid", None, 1, 7),     # (5-1)*1 + 3
    (5, 3, 2, "valid", None, 1, 11),    # 5*2 + (3-2)
    (5, 1, 3, "valid", None, 1, 15),    # kernel shorter than stride: 5*3
    (5, 3, 2, "same", None, 1, 10),
    (7, 4, 3, "same", None, 1, 21),
    (5, 3, 1, "valid", None, 2, 9),     # dilated span 5: (5-1) + 5
    (5, 3, 1, "same", None, 3, 5),
    (5, 3, 2, "valid", 1, 1, 12),       # (5-1)*2 + 3 + 1
    (5, 3, 2, "same", 1, 1, 10),        # (5-1)*2 + 3 - 2*1 + 1
    (5, 4, 2, "same", 1, 1, 9),         # (5-1)*2 + 4 - 2*2 + 1
    (1, 5, 4, "valid", 3, 1, 8),        # 0 + 5 + 3
    (None, 3, 2, "same", None, 1, None),
]


@pytest.mark.parametrize("n,k,s,padding,op,d,expected", OUTPUT_LENGTH_ROWS)
def test_output_length(n, k, s, padding, op, d, expected):
    assert shapes.output_length(n, k, s, padding, op, d) == expected


@pytest.mark.parametrize(
    "n,k,s,padding,d,expected",
    [
        (5, 3, 2, "valid", 1, (11, 12)),  # full 11, plus up to s - 1
        (5, 3, 2, "same", 1, (9, 10)),    # ceil(L / 2) == 5
        (4, 2, 3, "valid", 1, (11, 13)),
        (4, 1, 3, "same", 1, (10, 12)),
        (6, 3, 1, "valid", 2, (10, 10)),  # stride 1: exactly one length
    ],
)
def test_output_length_range(n, k, s, padding, d, expected):
    assert shapes.output_length_range(n, k, s, padding, d) == expected


@pytest.mark.parametrize(
    "n,out,k,s,padding,expected",
    [
        (5, 10, 3, 2, "same", 0),   # full 11, one extra: none before
        (5, 9, 3, 2, "same", 1),    # two extra: one before
        (5, 5, 5, 1, "same", 2),    # full 9: four extra, two before
        (4, 12, 1, 3, "same", 0),   # full 10 < 12: nothing to crop
        (5, 12, 3, 2, "valid", 0),
    ],
)
def test_crop_start(n, out, k, s, padding, expected):
    assert shapes.crop_start(n, out, k, s, padding) == expected


def test_normalize_tuple_forms():
    assert shapes.normalize_tuple(2, "strides") == (2, 2, 2)
    assert shapes.normalize_tuple([3], "strides") == (3, 3, 3)
    assert shapes.normalize_tuple((1, 2, 3), "strides") == (1, 2, 3)
    assert shapes.normalize_tuple((0, 1, 0), "output_padding", allow_zero=True) == (0, 1, 0)


@pytest.mark.parametrize(
    "value,error,fragment",
    [
        ((1, 2), ValueError, "kernel_size=(1, 2)"),
        (0, ValueError, "kernel_size=0"),
        (-3, ValueError, "kernel_size=-3"),
        (2.5, TypeError, "kernel_size=2.5"),
        ((2, "3", 1), TypeError, "kernel_size=(2, '3', 1)"),
        (True, TypeError, "kernel_size=True"),
        ("3", TypeError, "kernel_size='3'"),
        ({1, 2, 3}, TypeError, "kernel_size={1, 2, 3}"),
        (2**31, ValueError, "at most 2147483647"),
    ],
    ids=["two values", "zero", "negative", "float", "a string element", "bool", "a string",
         "a set", "beyond int32"],
)
def test_normalize_tuple_errors_name_argument_and_value(value, error, fragment):
    with pytest.raises(error, match="kernel_size") as info:
        shapes.normalize_tuple(value, "kernel_size")
    assert fragment in str(info.value)


def test_normalize_choice_is_case_insensitive_and_strict():
    assert shapes.normalize_choice("SAME", "padding", shapes.PADDINGS) == "same"
    with pytest.raises(ValueError, match="padding='full'"):
        shapes.normalize_choice("full", "padding", shapes.PADDINGS)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (((3, 3, 3), (2, 1, 1), "valid", (1, 2, 1), None), "incompatible"),
        (((3, 3, 3), (2, 2, 2), "valid", (1, 1, 1), (0, 2, 0)), "smaller than its stride"),
        (((2, 3, 3), (2, 2, 2), "same", (1, 1, 1), (0, 1, 1)), "at least 1"),
        (((3, 3, 3), (1, 1, 1), "valid", (2**30, 1, 1), None), "spans"),
    ],
    ids=["strides and dilation", "output_padding not below stride",
         "same, even kernel, no output_padding", "dilated span beyond int32"],
)
def test_check_conv_arguments(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        shapes.check_conv_arguments(*args)


def test_requested_shape_out_of_range_states_legal_range():
    with pytest.raises(ValueError, match="between 9 and 10"):
        shapes.check_requested_shape((10, 11, 10), (5, 5, 5), (3, 3, 3), (2, 2, 2),
                                     "same", (1, 1, 1))
    assert shapes.check_requested_shape((9, 10, 9), (5, 5, 5), (3, 3, 3), (2, 2, 2),
                                        "same", (1, 1, 1)) == (9, 10, 9)
