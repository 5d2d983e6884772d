"""Resolving rewards named in a recipe: registered names, dotted paths, files, and their errors."""
import sys
import textwrap

import pytest

import rewards
from rewards import RewardSpecError, get_reward, list_rewards, register, resolve_reward

BUILT_IN = [
    "accuracy",
    "format",
    "tag_count",
    "language_consistency",
    "cosine_length",
    "repetition_penalty",
    "soft_overlong",
    "countdown",
]


def test_every_built_in_reward_is_registered():
    assert set(BUILT_IN) <= set(list_rewards())


# reward_model needs a model folder (tests/rewards/test_reward_model.py builds one).
@pytest.mark.parametrize("name", [name for name in list_rewards() if name != "reward_model"])
def test_every_registered_name_resolves_and_scores(name):
    resolved_name, function = resolve_reward({"name": name, "weight": 0.5})
    assert resolved_name == name
    columns = {"prompts": ["p"], "answer": ["4"], "numbers": [[4]], "target": [4]}
    scores = function(["<think>a</think><answer>4</answer>"], **columns)
    assert len(scores) == 1 and (scores[0] is None or isinstance(scores[0], float))


def test_kwargs_reach_the_factory():
    _, function = resolve_reward({"name": "format", "kwargs": {"prefix": "<think>"}, "weight": 1.0})
    assert function(["a</think><answer>4</answer>"]) == [1.0]


def test_register_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register("accuracy")(lambda completions, **columns: [])


def test_register_adds_a_plain_function():
    @register("test_registry_constant_one")
    def constant_one(completions, **columns):
        return [1.0] * len(completions)

    assert get_reward("test_registry_constant_one") is constant_one
    assert resolve_reward({"name": "test_registry_constant_one"})[1](["x"]) == [1.0]
    with pytest.raises(RewardSpecError, match="takes no kwargs"):
        get_reward("test_registry_constant_one", scale=2)


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(RewardSpecError, match="did you mean 'accuracy'") as error:
        resolve_reward({"name": "acuracy"})
    assert "\n" not in str(error.value)


def test_bad_kwargs_are_reported():
    with pytest.raises(RewardSpecError, match="bad kwargs"):
        resolve_reward({"name": "format", "kwargs": {"prefx": "<think>"}})


def test_factory_validation_errors_become_spec_errors():
    with pytest.raises(RewardSpecError, match="answer_source"):
        resolve_reward({"name": "accuracy", "kwargs": {"answer_source": "last_line"}})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "format", "wieght": 1.0}, "unknown key"),  # a typo in a key
        ({"weight": 1.0}, "exactly one of"),  # neither name nor path
        ({"name": "format", "path": "x.py"}, "exactly one of"),  # both
        ({"path": "x.py"}, "no 'function'"),  # a file without a function name
        ({"name": "format", "kwargs": ["<think>"]}, "must be a mapping"),  # kwargs not a mapping
        ("format", "must be a mapping"),  # a bare string instead of an entry
    ],
)
def test_malformed_specs(spec, message):
    with pytest.raises(RewardSpecError, match=message):
        resolve_reward(spec)


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """An importable module `user_rewards_pkg.scores` with good and bad reward functions."""
    package = tmp_path / "user_rewards_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scores.py").write_text(
        textwrap.dedent(
            """
            def length_reward(completions, **columns):
                return [float(len(c)) for c in completions]

            def answer_reward(completions, answer, **columns):
                return [float(c == a) for c, a in zip(completions, answer)]

            def no_columns(completions):
                return [0.0] * len(completions)

            def get_scaled_reward(scale=1.0):
                def scaled(completions, **columns):
                    return [scale] * len(completions)
                return scaled

            async def async_reward(completions, **columns):
                return [1.0] * len(completions)

            class Holder:
                @staticmethod
                def nested(completions, **columns):
                    return [2.0] * len(completions)
            """
        )
    )
    (package / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    # The next test imports its own copy: this one's folder goes when the test passes.
    for module in [m for m in sys.modules if m.split(".")[0] == "user_rewards_pkg"]:
        del sys.modules[module]


def test_dotted_path_resolves(user_package):
    name, function = resolve_reward({"name": "user_rewards_pkg.scores:length_reward", "weight": 2})
    assert name == "length_reward" and function(["abc"]) == [3.0]


def test_dotted_path_with_named_columns(user_package):
    _, function = resolve_reward({"name": "user_rewards_pkg.scores:answer_reward"})
    assert function(["4", "5"], answer=["4", "4"], prompts=["p", "p"]) == [1.0, 0.0]


def test_dotted_path_with_kwargs_calls_a_factory(user_package):
    spec = {"name": "user_rewards_pkg.scores:get_scaled_reward", "kwargs": {"scale": 0.25}}
    name, function = resolve_reward(spec)
    assert name == "get_scaled_reward" and function(["a", "b"]) == [0.25, 0.25]


def test_dotted_path_to_async_function_and_attribute(user_package):
    assert resolve_reward({"name": "user_rewards_pkg.scores:async_reward"})[0] == "async_reward"
    name, function = resolve_reward({"name": "user_rewards_pkg.scores:Holder.nested"})
    assert name == "nested" and function(["a"]) == [2.0]


@pytest.mark.parametrize(
    "name, message",
    [
        ("user_rewards_pkg.missing:length_reward", "cannot import module"),  # no such module
        ("no_such_package_xyz.scores:f", "cannot import module"),  # no such package
        ("user_rewards_pkg.broken:f", "boom at import"),  # the module fails on import
        ("user_rewards_pkg.scores:lenght_reward", "did you mean 'length_reward'"),  # typo
        ("user_rewards_pkg.scores:no_columns", "cannot accept"),  # no **columns
        ("user_rewards_pkg.scores:get_scaled_reward", "cannot accept"),  # factory without kwargs
    ],
)
def test_dotted_path_errors(user_package, name, message):
    with pytest.raises(RewardSpecError, match=message):
        resolve_reward({"name": name})


@pytest.fixture
def reward_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            def score(completions, **columns):
                return [0.5] * len(completions)

            def wrong(completions, answer):
                return [0.0] * len(completions)

            not_a_function = 3
            """
        )
    )
    (tmp_path / "syntax_error.py").write_text("def score(:\n")
    return tmp_path


def test_file_resolves_relative_to_the_working_directory(reward_file):
    name, function = resolve_reward({"path": "./my_rewards.py", "function": "score", "weight": 1})
    assert name == "score" and function(["a"]) == [0.5]


def test_file_given_by_absolute_path(reward_file):
    _, function = resolve_reward({"path": str(reward_file / "my_rewards.py"), "function": "score"})
    assert function(["a", "b"]) == [0.5, 0.5]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"path": "./missing.py", "function": "score"}, "not found"),  # no such file
        ({"path": "./my_rewards.py", "function": "scor"}, "did you mean 'score'"),  # no function
        ({"path": "./my_rewards.py", "function": "wrong"}, "cannot accept"),  # no **columns
        ({"path": "./my_rewards.py", "function": "not_a_function"}, "not callable"),  # a constant
        ({"path": "./syntax_error.py", "function": "score"}, "SyntaxError"),  # broken file
    ],
)
def test_file_errors(reward_file, spec, message):
    with pytest.raises(RewardSpecError, match=message) as error:
        resolve_reward(spec)
    assert "\n" not in str(error.value)


def test_package_exports():
    for name in ("register", "get_reward", "resolve_reward", "list_rewards", "RewardSpecError"):
        assert hasattr(rewards, name)
    assert issubclass(RewardSpecError, ValueError)


# ----------------------------------------------------------------------------- columns a reward reads
@pytest.mark.parametrize("name, columns", [
    ("accuracy", rewards.ColumnsRead(required=("answer",))),
    ("countdown", rewards.ColumnsRead(required=("numbers", "target"))),
    ("code", rewards.ColumnsRead(any_of=("tests", "io_tests"))),
    ("format", rewards.ColumnsRead()),  # reads the completion only
])
def test_built_in_rewards_declare_the_columns_they_read(name, columns):
    assert rewards.registered_columns(name) == columns
    if name != "code":  # building the code reward needs bubblewrap
        assert rewards.columns_read(get_reward(name)) == columns


@pytest.mark.parametrize("columns, missing", [
    (["question", "numbers", "target"], None),
    (["question", "numbers"], "target"),
    (["question"], "numbers, target"),
])
def test_columns_read_names_what_a_dataset_lacks(columns, missing):
    assert rewards.ColumnsRead(required=("numbers", "target")).missing(columns) == missing


def test_a_reward_needing_one_of_several_columns():
    needs = rewards.ColumnsRead(any_of=("tests", "io_tests"))
    assert needs.missing(["io_tests"]) is None
    assert needs.missing(["answer"]) == "tests or io_tests"
    assert needs.describe() == "tests or io_tests"


@pytest.mark.parametrize("columns, rule", [
    (["question", "answer"], "accuracy"),
    (["question", "numbers", "target", "answer"], "countdown"),  # the most specific data wins
    (["question", "tests", "answer"], "code"),
    (["question"], None),
])
def test_the_reward_that_judges_answers_is_chosen_by_the_data_columns(columns, rule):
    assert rewards.correctness_reward(columns) == rule


def test_a_user_reward_without_declared_columns_requires_none():
    assert rewards.columns_read(lambda completions, **columns: [1.0] * len(completions)) == rewards.ColumnsRead()
