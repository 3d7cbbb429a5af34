"""Round trips for the command-line / ini options of the plugin.

Every test runs a real inner pytest session (pytester) whose `llm` calls go over HTTP to a
ScriptedServer on 127.0.0.1; nothing of pytest_promptopt is mocked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from example import Example

from pytest_promptopt.testing import ScriptedServer

ENV_VARS = (
    "OPENAI_BASE_URL", "OPENAI_API_KEY",
    "PROMPTOPT_BASE_URL", "PROMPTOPT_MODEL", "PROMPTOPT_API_KEY",
    "PROMPTOPT_JUDGE_BASE_URL", "PROMPTOPT_JUDGE_MODEL", "PROMPTOPT_JUDGE_API_KEY",
    "PROMPTOPT_OPTIMIZER_BASE_URL", "PROMPTOPT_OPTIMIZER_MODEL", "PROMPTOPT_OPTIMIZER_API_KEY",
)

UPPER_PROMPT = "messages:\n  - role: system\n    content: Shout.\n  - role: user\n    content: '{text}'\n"

UPPER_TESTS = """
import pytest
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

@pytest.mark.parametrize("text", ["hello", "bye"])
def test_shout(llm, text):
    assert llm(shout, text=text) == text.upper()
"""


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # hypothesis' plugin re-imports (and re-rewrites) its package in every inner run: ~1 s each
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")


@pytest.fixture
def other() -> Iterator[ScriptedServer]:
    """A second scripted server, to prove which endpoint received the calls."""
    with ScriptedServer() as server:
        yield server


def _upper(messages: list[dict[str, str]], body: dict[str, object]) -> str:
    return messages[-1]["content"].upper()


@pytest.fixture
def shout(suite: pytest.Pytester, scripted: ScriptedServer) -> pytest.Pytester:
    scripted.responder = _upper
    Example(suite, {"shout.yaml": UPPER_PROMPT, "test_shout.py": UPPER_TESTS})
    return suite


def _ini(pytester: pytest.Pytester, **values: object) -> None:
    lines = ["[pytest]"] + [f"{k} = {v}" for k, v in values.items()]
    pytester.makeini("\n".join(lines) + "\n")


# -- record modes ------------------------------------------------------------------------------

def test_record_normal_serves_the_second_run_from_the_cache(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.runpytest("--promptopt-record=normal").assert_outcomes(passed=2)
    assert scripted.count == 2
    shout.runpytest("--promptopt-record=normal").assert_outcomes(passed=2)
    assert scripted.count == 2  # served from the cache
    shout.runpytest().assert_outcomes(passed=2)  # normal is the default
    assert scripted.count == 2


def test_record_replay_miss_fails_with_node_id_prompt_and_hint(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = shout.runpytest("--promptopt-record=replay")
    result.assert_outcomes(failed=2)
    assert scripted.count == 0  # replay never calls the model
    out = result.stdout.str()
    assert "replay mode: no recorded reply" in out
    assert "test_shout.py::test_shout[hello]" in out
    assert str(shout.path / "shout.yaml") in out
    assert "--promptopt-record=normal" in out  # says how to record


def test_record_replay_serves_recorded_calls(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.runpytest("-k", "hello").assert_outcomes(passed=1)  # record one of the two cases
    assert scripted.count == 1
    result = shout.runpytest("--promptopt-record=replay")
    result.assert_outcomes(passed=1, failed=1)
    assert scripted.count == 1
    (failed,) = result.reprec.listoutcomes()[2]  # type: ignore[attr-defined]
    assert failed.nodeid == "test_shout.py::test_shout[bye]"
    assert "replay mode: no recorded reply" in failed.longreprtext


def test_record_refresh_calls_again_and_overwrites(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.runpytest().assert_outcomes(passed=2)
    assert scripted.count == 2
    scripted.responder = lambda messages, body: "changed"
    shout.runpytest("--promptopt-record=refresh").assert_outcomes(failed=2)
    assert scripted.count == 4  # called again despite the cache
    shout.runpytest().assert_outcomes(failed=2)  # the refreshed (wrong) replies were stored
    assert scripted.count == 4


def test_record_off_never_caches(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.runpytest("--promptopt-record=off").assert_outcomes(passed=2)
    shout.runpytest("--promptopt-record=off").assert_outcomes(passed=2)
    assert scripted.count == 4
    # nothing was written: a replay run has nothing to serve
    shout.runpytest("--promptopt-record=replay").assert_outcomes(failed=2)
    assert scripted.count == 4


@pytest.mark.parametrize(
    ("mode", "first", "second"),
    [("normal", 2, 2), ("refresh", 2, 4), ("off", 2, 4)],
)
def test_record_mode_from_ini(shout: pytest.Pytester, scripted: ScriptedServer,
                              mode: str, first: int, second: int) -> None:
    _ini(shout, promptopt_base_url=scripted.base_url, promptopt_model="scripted", promptopt_record=mode)
    shout.runpytest().assert_outcomes(passed=2)
    assert scripted.count == first
    shout.runpytest().assert_outcomes(passed=2)
    assert scripted.count == second


def test_record_replay_from_ini_and_cli_wins(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    _ini(shout, promptopt_base_url=scripted.base_url, promptopt_model="scripted", promptopt_record="replay")
    result = shout.runpytest()
    result.assert_outcomes(failed=2)
    assert "replay mode: no recorded reply" in result.stdout.str()
    assert scripted.count == 0
    shout.runpytest("--promptopt-record=normal").assert_outcomes(passed=2)  # command line over ini
    assert scripted.count == 2
    shout.runpytest().assert_outcomes(passed=2)  # ini replay now finds the recording
    assert scripted.count == 2


def test_bad_record_mode_in_ini_is_a_usage_error(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    _ini(shout, promptopt_base_url=scripted.base_url, promptopt_model="scripted", promptopt_record="sometimes")
    result = shout.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*promptopt_record*'sometimes'*normal, replay, refresh, off*"])


# -- cache dir -----------------------------------------------------------------------------

def test_cache_dir_option(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    shout.runpytest("--promptopt-cache-dir=my_cache").assert_outcomes(passed=2)
    assert (shout.path / "my_cache").is_dir()
    assert not (shout.path / ".promptopt_cache").exists()
    shout.runpytest("--promptopt-cache-dir=my_cache").assert_outcomes(passed=2)
    assert scripted.count == 2
    # another folder is another (empty) cache
    shout.runpytest("--promptopt-cache-dir=elsewhere").assert_outcomes(passed=2)
    assert scripted.count == 4
    assert (shout.path / "elsewhere").is_dir()


def test_cache_dir_default_and_absolute(shout: pytest.Pytester, scripted: ScriptedServer,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    shout.runpytest().assert_outcomes(passed=2)
    assert (shout.path / ".promptopt_cache").is_dir()
    absolute = tmp_path_factory.mktemp("abs") / "cache"
    shout.runpytest(f"--promptopt-cache-dir={absolute}").assert_outcomes(passed=2)
    assert absolute.is_dir()
    assert scripted.count == 4


def test_cache_dir_from_ini(shout: pytest.Pytester, scripted: ScriptedServer) -> None:
    _ini(shout, promptopt_base_url=scripted.base_url, promptopt_model="scripted",
         promptopt_cache_dir="ini_cache")
    shout.runpytest().assert_outcomes(passed=2)
    assert (shout.path / "ini_cache").is_dir()
    assert not (shout.path / ".promptopt_cache").exists()
    shout.runpytest().assert_outcomes(passed=2)
    assert scripted.count == 2
    shout.runpytest("--promptopt-cache-dir=cli_cache").assert_outcomes(passed=2)  # command line over ini
    assert (shout.path / "cli_cache").is_dir()
    assert scripted.count == 4


def test_command_line_paths_are_relative_to_the_current_directory(
    shout: pytest.Pytester, scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # like --junitxml: run from a subfolder, the rootdir (with the ini file) is its parent
    sub = shout.mkdir("sub")
    monkeypatch.chdir(sub)
    result = shout.runpytest(str(shout.path / "test_shout.py"), "--promptopt-cache-dir=cli_cache",
                             "--promptopt-report=out/r.json")
    result.assert_outcomes(passed=2)
    assert f"rootdir: {shout.path}" in result.stdout.str()
    assert (sub / "cli_cache").is_dir()
    assert (sub / "out" / "r.json").is_file()
    assert not (shout.path / "cli_cache").exists()
    assert not (shout.path / "out").exists()
    result.stdout.fnmatch_lines([f"promptopt report: {sub / 'out' / 'r.json'}"])


def test_ini_paths_are_relative_to_the_rootdir(shout: pytest.Pytester, scripted: ScriptedServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # like pytest's cache_dir: the current directory does not matter
    _ini(shout, promptopt_base_url=scripted.base_url, promptopt_model="scripted",
         promptopt_cache_dir="ini_cache", promptopt_report="ini_report.json")
    sub = shout.mkdir("sub")
    monkeypatch.chdir(sub)
    shout.runpytest(str(shout.path / "test_shout.py")).assert_outcomes(passed=2)
    assert (shout.path / "ini_cache").is_dir()
    assert (shout.path / "ini_report.json").is_file()
    assert not (sub / "ini_cache").exists()
    assert not (sub / "ini_report.json").exists()


@pytest.mark.parametrize("where", ["cli", "ini"])
def test_paths_expand_the_home_folder(shout: pytest.Pytester, scripted: ScriptedServer,
                                      monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                                      where: str) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    if where == "cli":
        args = ["--promptopt-cache-dir=~/c", "--promptopt-report=~/r.json"]
    else:
        args = []
        _ini(shout, promptopt_base_url=scripted.base_url, promptopt_model="scripted",
             promptopt_cache_dir="~/c", promptopt_report="~/r.json")
    shout.runpytest(*args).assert_outcomes(passed=2)
    assert (home / "c").is_dir()
    assert (home / "r.json").is_file()
    assert not (shout.path / "~").exists()


# -- endpoint precedence -------------------------------------------------------------------

MODEL_TESTS = """
from pytest_promptopt import load_prompt
shout = load_prompt("shout.yaml")

def test_it(llm):
    assert llm(shout, text="hi") == "HI"
"""


@pytest.fixture
def two_servers(pytester: pytest.Pytester, scripted: ScriptedServer,
                other: ScriptedServer) -> pytest.Pytester:
    scripted.responder = other.responder = _upper
    Example(pytester, {"shout.yaml": UPPER_PROMPT, "test_it.py": MODEL_TESTS})
    return pytester


def _models(server: ScriptedServer) -> list[str]:
    return [str(body["model"]) for body in server.requests]


def test_cli_base_url_and_model_over_ini(two_servers: pytest.Pytester, scripted: ScriptedServer,
                                         other: ScriptedServer) -> None:
    _ini(two_servers, promptopt_base_url=scripted.base_url, promptopt_model="ini-model")
    two_servers.runpytest(f"--promptopt-base-url={other.base_url}", "--promptopt-model=cli-model",
                          "--promptopt-record=off").assert_outcomes(passed=1)
    assert scripted.count == 0
    assert _models(other) == ["cli-model"]
    two_servers.runpytest("--promptopt-record=off").assert_outcomes(passed=1)
    assert _models(scripted) == ["ini-model"]


def test_ini_over_environment(two_servers: pytest.Pytester, scripted: ScriptedServer, other: ScriptedServer,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)
    monkeypatch.setenv("PROMPTOPT_MODEL", "env-model")
    _ini(two_servers, promptopt_base_url=scripted.base_url, promptopt_model="ini-model")
    two_servers.runpytest("--promptopt-record=off").assert_outcomes(passed=1)
    assert other.count == 0
    assert _models(scripted) == ["ini-model"]


def test_environment_alone(two_servers: pytest.Pytester, scripted: ScriptedServer, other: ScriptedServer,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)
    monkeypatch.setenv("PROMPTOPT_MODEL", "env-model")
    two_servers.runpytest("--promptopt-record=off").assert_outcomes(passed=1)
    assert scripted.count == 0
    assert _models(other) == ["env-model"]
    # PROMPTOPT_BASE_URL is preferred over OPENAI_BASE_URL
    monkeypatch.setenv("PROMPTOPT_BASE_URL", scripted.base_url)
    two_servers.runpytest("--promptopt-record=off").assert_outcomes(passed=1)
    assert _models(scripted) == ["env-model"]
    assert other.count == 1


def test_cli_over_environment(two_servers: pytest.Pytester, scripted: ScriptedServer, other: ScriptedServer,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)
    monkeypatch.setenv("PROMPTOPT_MODEL", "env-model")
    two_servers.runpytest(f"--promptopt-base-url={scripted.base_url}", "--promptopt-record=off",
                          ).assert_outcomes(passed=1)
    assert other.count == 0
    assert _models(scripted) == ["env-model"]  # the model still comes from the environment


def test_api_key_reaches_the_endpoint(two_servers: pytest.Pytester, scripted: ScriptedServer,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    _ini(two_servers, promptopt_base_url=scripted.base_url, promptopt_model="m", promptopt_api_key="ini-key")
    two_servers.runpytest("--promptopt-record=off").assert_outcomes(passed=1)
    two_servers.runpytest("--promptopt-record=off", "--promptopt-api-key=cli-key").assert_outcomes(passed=1)
    assert [h["authorization"] for h in scripted.headers] == ["Bearer ini-key", "Bearer cli-key"]


def test_model_in_prompt_file_overrides_the_endpoint_model(two_servers: pytest.Pytester,
                                                           scripted: ScriptedServer) -> None:
    two_servers.makefile(".yaml", shout="model: file-model\n" + UPPER_PROMPT)
    _ini(two_servers, promptopt_base_url=scripted.base_url, promptopt_model="ini-model")
    two_servers.runpytest("--promptopt-record=off").assert_outcomes(passed=1)
    assert _models(scripted) == ["file-model"]


# -- bad values ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--promptopt-min-pass-rate", "2"], "*--promptopt-min-pass-rate*expected a number from 0 to 1, got '2'*"),
        (["--promptopt-concurrency", "0"], "*--promptopt-concurrency*expected a whole number of at least 1, got '0'*"),
        (["--promptopt-record", "bogus"], "*--promptopt-record*invalid choice*'bogus'*"),
        (["--promptopt-base-url", "ftp://x"], "*--promptopt-base-url*http:// or https://*'ftp://x'*"),
        (["--promptopt-judge-threshold", "-0.5"], "*--promptopt-judge-threshold*from 0 to 1*"),
        (["--promptopt-timeout", "0"], "*--promptopt-timeout*positive number*"),
        (["--promptopt-retries", "many"], "*--promptopt-retries*whole number*'many'*"),
    ],
)
def test_bad_values_are_usage_errors(shout: pytest.Pytester, scripted: ScriptedServer,
                                     args: list[str], message: str) -> None:
    result = shout.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert scripted.count == 0


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ({"promptopt_min_pass_rate": "1.5"}, "*promptopt_min_pass_rate*'1.5'*from 0 to 1*"),
        ({"promptopt_concurrency": "0"}, "*promptopt_concurrency*'0'*at least 1*"),
        ({"promptopt_base_url": "ftp://x", "promptopt_model": "m"}, "*base URL must start with http:// or https://*"),
        ({"promptopt_prices": "gpt = cheap"}, "*promptopt_prices*cannot read*"),
    ],
)
def test_bad_ini_values_are_usage_errors(shout: pytest.Pytester, ini: dict[str, str], message: str) -> None:
    _ini(shout, **ini)
    result = shout.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_base_url_without_model_names_the_option(two_servers: pytest.Pytester, scripted: ScriptedServer) -> None:
    result = two_servers.runpytest(f"--promptopt-base-url={scripted.base_url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "has no model" in err
    assert "--promptopt-model" in err
    assert scripted.count == 0


def test_judge_base_url_without_model_names_the_judge_option(two_servers: pytest.Pytester,
                                                             scripted: ScriptedServer, other: ScriptedServer) -> None:
    _ini(two_servers, promptopt_base_url=scripted.base_url, promptopt_model="m")
    result = two_servers.runpytest(f"--promptopt-judge-base-url={other.base_url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert re.search(r"judge endpoint .* has no model; set --promptopt-judge-model", result.stderr.str())


def test_options_are_listed_in_help_even_with_bad_settings(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # and no model: a usage error in a run
    assert pytester.runpytest().ret == pytest.ExitCode.USAGE_ERROR
    result = pytester.runpytest("--help")
    assert result.ret == 0
    out = result.stdout.str()
    for flag in ("--promptopt-record", "--promptopt-cache-dir", "--promptopt-base-url", "--promptopt-model",
                 "--promptopt-judge-base-url", "--promptopt-judge-model", "--promptopt-min-pass-rate",
                 "--promptopt-judge-threshold", "--promptopt-report", "--promptopt-concurrency"):
        assert flag in out
    for ini in ("promptopt_record", "promptopt_cache_dir", "promptopt_base_url", "promptopt_min_pass_rate"):
        assert ini in out


def test_concurrency_defaults_by_endpoint(pytester: pytest.Pytester, scripted: ScriptedServer) -> None:
    """8 calls in flight for an endpoint, 1 for the embedded model (it answers one at a time);
    the option sets every role. The embedded server is never started: no call is made."""
    pytester.makepyfile("""
        def test_it(promptopt_runtime):
            print("concurrency", {r: promptopt_runtime.client(r).concurrency for r in ("task", "judge")})
        """)
    embedded = pytester.runpytest("-s")
    embedded.stdout.fnmatch_lines(["*concurrency {'task': 1, 'judge': 1}*"])
    endpoint = pytester.runpytest("-s", f"--promptopt-base-url={scripted.base_url}", "--promptopt-model=m")
    endpoint.stdout.fnmatch_lines(["*concurrency {'task': 8, 'judge': 8}*"])
    both = pytester.runpytest("-s", f"--promptopt-judge-base-url={scripted.base_url}", "--promptopt-judge-model=m")
    both.stdout.fnmatch_lines(["*concurrency {'task': 1, 'judge': 8}*"])
    given = pytester.runpytest("-s", "--promptopt-concurrency=3")
    given.stdout.fnmatch_lines(["*concurrency {'task': 3, 'judge': 3}*"])
