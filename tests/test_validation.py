"""Parameter checks: numpy scalars count as the numbers they are, bool never does, errors name name/value/valid."""
import numpy as np
import pytest

from fedlab_utils.validation import check_choice, check_fraction, check_int, check_optional_path, check_real


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), np.arange(5)[3]])
def test_any_integral_is_an_integer_and_comes_back_as_a_plain_int(value):
    checked = check_int("rounds", value, 1, 10)
    assert checked == 3 and type(checked) is int


@pytest.mark.parametrize("value", [0.5, np.float64(0.5), np.float32(0.5), 1, np.int64(1)])
def test_any_real_is_a_number_and_comes_back_as_a_plain_float(value):
    checked = check_real("lr", value, 0, low_inclusive=False)
    assert checked == float(value) and type(checked) is float
    assert type(check_fraction("fraction", value)) is float


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, np.float64(3.0), "3", None])
def test_bool_and_non_integers_are_refused_as_integers(value):
    with pytest.raises(ValueError, match=r"rounds=.* is not valid; it must be an integer"):
        check_int("rounds", value, 1)


@pytest.mark.parametrize("value", [False, np.bool_(False), "0.5", None, np.float64("nan")])
def test_bool_text_and_nan_are_refused_as_numbers(value):
    with pytest.raises(ValueError, match=r"lr=.* is not valid; it must be a number"):
        check_real("lr", value)


def test_out_of_range_names_the_parameter_the_value_and_the_interval():
    with pytest.raises(ValueError, match=r"^rounds=0 is out of range; valid: \[1, inf\]$"):
        check_int("rounds", np.int64(0), 1)
    with pytest.raises(ValueError, match=r"^fraction=1.5 is out of range; valid: \(0.0, 1.0\]$"):
        check_fraction("fraction", np.float32(1.5))
    with pytest.raises(ValueError, match=r"^lr=0 is out of range; valid: \(0, inf\]$"):
        check_real("lr", 0, 0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"dataset='x' is not valid; choose one of \['digits', 'mnist5k'\]"):
        check_choice("dataset", "x", ("mnist5k", "digits"))
    with pytest.raises(ValueError, match="use None or a file path string"):
        check_optional_path("results_path", "")


def test_check_parameters_validates_in_table_order_and_normalises():
    import numpy as np

    from fedlab_utils.validation import check_parameters, choice, fraction, integer, optional_path, real

    rules = {"rounds": integer(1), "lr": real(0, low_inclusive=False), "fraction": fraction(),
             "profile": choice(("a", "b")), "results_path": optional_path()}
    ok = check_parameters({"rounds": np.int64(3), "lr": 0.1, "fraction": 1, "profile": "a",
                           "results_path": None, "unrelated": object()}, rules)
    assert ok == {"rounds": 3, "lr": 0.1, "fraction": 1.0, "profile": "a", "results_path": None}
    assert type(ok["rounds"]) is int
    with pytest.raises(ValueError, match=r"rounds=0 is out of range"):
        check_parameters({"rounds": 0, "lr": -1, "fraction": 1, "profile": "a", "results_path": None}, rules)
    with pytest.raises(ValueError, match=r"profile='c' is not valid"):
        check_parameters({"rounds": 1, "lr": 1, "fraction": 1, "profile": "c", "results_path": None}, rules)
    with pytest.raises(NameError, match="'lr'"):
        check_parameters({"rounds": 1}, rules)


def test_check_parameters_relations_see_normalised_values():
    from fedlab_utils.validation import check_parameters, integer

    def every_within_rounds(p):
        if p["every"] > p["rounds"]:
            raise ValueError(f"every={p['every']} is more than rounds={p['rounds']}")

    rules = {"rounds": integer(1), "every": integer(1)}
    assert check_parameters({"rounds": 4, "every": 2}, rules, [every_within_rounds]) == {"rounds": 4, "every": 2}
    with pytest.raises(ValueError, match=r"every=5 is more than rounds=4"):
        check_parameters({"rounds": 4, "every": 5}, rules, [every_within_rounds])
