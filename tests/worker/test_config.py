"""The worker's config file: every error names the file, the field and the reason; a good
file overrides what detection found; slots and driver settings have their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psched.worker.config import CommandDriverConfig, ConfigError, HttpDriverConfig, load_config


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[worker\n", "not valid TOML"),
        ("[workr]\n", "[workr]: unknown table"),
        ("[worker]\nslot = 1\n", "[worker] slot: unknown field"),
        ("[network]\nupload = 5\n", "[network] upload: unknown field"),
        ("[override]\nram = 5\n", "[override] ram: unknown field"),
        ("[worker]\nqueue = true\n", "[worker] queue: must be a whole number of tasks, 0..1024"),
        ("[worker]\nslots = -1\n", "[worker] slots: must be a whole number"),
        ("[worker]\nmin_price = -0.5\n", "[worker] min_price: must be a finite number >= 0"),
        ('[worker]\nmodels = ["a"]\nloaded_models = ["b"]\n', "'b' is loaded but not among models"),
        ('[override]\ngpus = [{ model = "X" }]\n', "[override] gpus[0].vram_gb"),
        ("[override]\ngpus = 5\n", "[override] gpus: must be a list"),
        ("[override]\nram_gb = nan\n", "must be a finite number"),
        ("[worker]\nmin_price = inf\n", "must be a finite number"),
        # Accepted field by field, refused as a whole: what every asker would throw away.
        (
            "[worker]\nlabels = { " + ", ".join(f"l{i} = 'x'" for i in range(17)) + " }\n",
            "profile.labels",
        ),
        ("[override]\ncpu_cores = 5000\n", "profile.specifications.CPU.cores"),
        (
            "[worker]\nmodels = ["
            + ", ".join(f"'model-{i}-{'x' * 100}'" for i in range(30))
            + "]\n",
            "over the 3072-byte limit",
        ),
    ],
)
def test_config_errors_name_the_file_field_and_reason(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and says in str(e.value)


def test_a_good_config_overrides_detection(tmp_path: Path) -> None:
    from p2psched.resources.detect import Detected

    path = tmp_path / "worker.toml"
    path.write_text(
        '[worker]\nslots = 2\ndrivers = ["http"]\nmin_price = 0.02\nmodels = ["m"]\n'
        'labels = { region = "eu" }\n[network]\ndownload_mbps = 900\n'
        '[override]\ncpu_cores = 64\ngpus = [{ model = "NVIDIA H100 80GB HBM3", vram_gb = 80 }]\n'
    )
    config = load_config(path)
    detected = Detected("CPU", 2, 8.0, 100.0, (), 0.1, 0.2)
    p = config.profile(detected)
    assert p.cpu_cores == 64 and p.ram_gb == 8.0 and p.gpus[0].family == "H100"
    assert p.free_slots == 2 and p.drivers == ("http",) and p.label("region") == "eu"
    assert p.download_mbps == 900.0


def test_slots_default_to_one_per_gpu(tmp_path: Path) -> None:
    from p2psched.resources.detect import Detected

    path = tmp_path / "worker.toml"
    gpu = '{ model = "NVIDIA A100-SXM4-80GB", vram_gb = 80 }'
    path.write_text(f"[override]\ngpus = [{gpu}, {gpu}, {gpu}]\n")
    cpu_only = Detected("CPU", 2, 8.0, 100.0, (), 0.0, 0.0)
    assert load_config(path).slot_count(cpu_only) == 3
    assert load_config(path).profile(cpu_only).free_slots == 3
    path.write_text('[worker]\ndrivers = ["echo"]\n')
    assert load_config(path).slot_count(cpu_only) == 1  # no GPU: one at a time
    path.write_text("[worker]\nslots = 0\n")
    with pytest.raises(ConfigError, match=r"slots: must be a whole number of tasks, 1\.\.1024"):
        load_config(path)


def test_driver_settings_have_defaults(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text('[worker]\ndrivers = ["command", "http"]\n')
    config = load_config(path)
    command = config.command_driver
    assert command == CommandDriverConfig(programs={}, max_output_bytes=1 << 20)
    assert (command.sandbox, command.network, command.stderr) == ("bwrap", False, False)
    assert command.limits.model_dump() == {
        "cpu_s": 60,
        "memory_mb": 1024,
        "processes": 64,
        "file_size_mb": 256,
        "open_files": 256,
        "disk_mb": 256,
    }
    assert config.http_driver == HttpDriverConfig(
        endpoints={}, timeout_s=120.0, max_response_bytes=4 << 20
    )


def _not_executable(tmp: Path) -> str:
    path = tmp / "data.txt"
    path.write_text("")
    path.chmod(0o644)
    return str(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "[drivers.command]\nstderr = true\n",
            "[drivers.command]: the command driver is not enabled; add 'command' to [worker] "
            "drivers to enable it",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.http]\nendpoints = {}\n',
            "[drivers.http]: the http driver is not enabled; add 'http' to [worker] drivers",
        ),
        (
            '[worker]\ndrivers = ["echo"]\n[drivers.echo]\nmax_timeout_s = 0\n',
            "[drivers.echo] max_timeout_s: must be more than 0 seconds",
        ),
        (
            '[worker]\ndrivers = ["echo"]\n[drivers.echo]\nmax_input_bytes = 524289\n',
            "[drivers.echo] max_input_bytes: must be a whole number of bytes, 1..524288 (a "
            "task's input must fit one message)",
        ),
        (
            '[worker]\ndrivers = ["echo"]\n[drivers.sleep]\nmax_timeout_s = 5\n',
            "[drivers.sleep]: the sleep driver is not enabled",
        ),
        ("[drivers.ftp]\n", "[drivers.ftp]: unknown table; known: [drivers.command]"),
        ("drivers = 5\n", "[drivers]: must hold tables"),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/no/such/prog"]\n',
            "[drivers.command] programs.x.argv: /no/such/prog does not exist",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\nargv = ["wc", "-c"]\n',
            "[drivers.command] programs.x.argv: 'wc' must be an absolute path",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\nargv = ["{tmp}"]\n',
            "[drivers.command] programs.x.argv: {tmp} is not executable",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\nargv = []\n',
            "[drivers.command] programs.x.argv: must be a list like",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs."a b"]\n'
            'argv = ["/bin/echo"]\n',
            "[drivers.command] programs.a b: a program's name is",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/bin/echo"]\nparams.n = { type = "number" }\n',
            "[drivers.command] programs.x.params.n.type: must be 'flag', 'integer', 'string'",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/bin/echo"]\nparams.n = { type = "flag" }\n',
            "[drivers.command] programs.x.params.n.arg: a flag needs its option",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/bin/echo"]\nparams.n = { type = "string", arg = "x" }\n',
            "[drivers.command] programs.x.params.n.arg: ",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command]\n'
            'allow = { wc = ["/usr/bin/wc"] }\n',
            "[drivers.command] allow: free arguments are no longer run (a task could pass any "
            "option to the program); declare each program with its typed parameters instead, "
            'like [drivers.command.programs.wc] argv = ["/usr/bin/wc"], params = ',
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command]\nsandbox = "docker"\n',
            "[drivers.command] sandbox: must be 'bwrap' or 'none'",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command]\nlimits = { cpu_s = 0 }\n',
            "[drivers.command] limits.cpu_s: ",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/bin/echo"]\nparams.n = { type = "string", foo = 1 }\n',
            "[drivers.command] programs.x.params.n.foo: unknown field; known: arg, max, "
            "max_length, min, type",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/bin/echo"]\nparam.n = { type = "string" }\n',
            "[drivers.command] programs.x.param: unknown field; known: argv, params",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command.programs.x]\n'
            'argv = ["/bin/echo"]\nparams.n = { type = "integer", min = 5, max = 1 }\n',
            "[drivers.command] programs.x.params.n.min: min (5) is more than max (1)",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command]\nmax_output_bytes = 0\n',
            "[drivers.command] max_output_bytes: must be a whole number of bytes",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\nendpoints = { m = "ftp://host/x" }\n',
            "[drivers.http] endpoints.m: 'ftp://host/x' must be an http:// or https:// URL",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\nendpoints = { m = "http:///x" }\n',
            "must be an http:// or https:// URL with a host",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\nendpoints = { m = "http://h:99999/" }\n',
            "[drivers.http] endpoints.m: 'http://h:99999/' is not a URL",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\nendpoints = { m = 8000 }\n',
            "[drivers.http] endpoints.m: must be a URL",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\ntimeout_s = 0\n',
            "[drivers.http] timeout_s: must be more than 0 seconds",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\ntimeout = 5\n',
            "[drivers.http] timeout: unknown field",
        ),
        (
            '[worker]\ndrivers = ["http"]\n[drivers.http]\nmax_response_bytes = 1.5\n',
            "[drivers.http] max_response_bytes: must be a whole number of bytes",
        ),
    ],
)
def test_driver_config_errors_name_the_file_field_and_reason(
    tmp_path: Path, text: str, says: str
) -> None:
    tmp = _not_executable(tmp_path)
    path = tmp_path / "worker.toml"
    path.write_text(text.replace("{tmp}", tmp))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and says.replace("{tmp}", tmp) in str(e.value)


ID_A, ID_B = "ab" * 32, "cd" * 32


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[worker]\nscheduler_grace_s = 0\n", "[worker] scheduler_grace_s: must be more than 0"),
        (
            "[worker]\npriority_multipliers = { low = 0 }\n",
            "[worker] priority_multipliers.low: must be more than 0 (a multiple of min_price)",
        ),
        (
            "[worker]\npriority_multipliers = { urgent = 2.0 }\n",
            "[worker] priority_multipliers.urgent: unknown field; known: high, low, normal",
        ),
        (
            '[schedulers]\nallow = ["abc"]\n',
            "[schedulers] allow[0]: 'abc' is not a node id (64 hex digits)",
        ),
        (
            f'[schedulers]\ndeny = ["{ID_A}", "{"zz" * 32}"]\n',
            f"[schedulers] deny[1]: '{'zz' * 32}' is not a node id",
        ),
        ('[schedulers]\ndeny = "all"\n', "[schedulers] deny: must be a list of node ids"),
        (
            f'[schedulers]\nallow = ["{ID_A}"]\nserve = "anyone"\n',
            '[schedulers] serve: allow lists the schedulers to serve, but serve = "anyone"',
        ),
        ('[schedulers]\nserve = "friends"\n', "[schedulers] serve: must be 'anyone' or 'allowed'"),
        (
            "[schedulers]\nslots = 0\n",
            "[schedulers] slots: must be a whole number of tasks, 1..1024",
        ),
        ("[schedulers]\nspend_per_hour = -1\n", "[schedulers] spend_per_hour: must be a finite"),
        (
            '[schedulers]\nfile = "nowhere.txt"\n',
            "[schedulers] file: cannot read {dir}/nowhere.txt",
        ),
        ("[schedulers]\nallw = []\n", "[schedulers] allw: unknown field; known: allow, deny,"),
    ],
)
def test_policy_settings_errors_name_the_file_field_and_reason(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and says.replace("{dir}", str(tmp_path)) in str(e.value)


def test_policy_settings_become_the_workers_terms(tmp_path: Path) -> None:
    from p2psched.resources.detect import Detected
    from p2psched.worker.policy import DriverCaps, PriorityPrices

    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "schedulers.txt").write_text(f"deny {ID_B}\n")
    path = tmp_path / "worker.toml"
    path.write_text(
        '[worker]\ndrivers = ["echo", "command"]\nmin_price = 0.1\nscheduler_grace_s = 30\n'
        "priority_multipliers = { low = 0.5, high = 2.0 }\n"
        f'[schedulers]\nallow = ["{ID_A}"]\ndeny = ["{ID_B}"]\nfile = "lists/schedulers.txt"\n'
        "slots = 3\nspend_per_hour = 2.5\n"
        "[drivers.echo]\nmax_timeout_s = 60\n"
        "[drivers.command]\nmax_input_bytes = 4096\n"
    )
    config = load_config(path)
    assert config.scheduler_grace_s == 30.0
    assert config.priority_prices == PriorityPrices(low=0.5, normal=1.0, high=2.0)
    policy = config.schedulers
    assert policy.only_allowed and policy.allow == {bytes.fromhex(ID_A)}
    assert policy.deny == {bytes.fromhex(ID_B)} and policy.slots == 3
    assert policy.spend_per_hour == 2.5
    assert config.schedulers_file == tmp_path / "lists" / "schedulers.txt"
    caps = config.driver_caps()
    assert caps["echo"] == DriverCaps(60.0, 512 << 10)
    assert caps["command"] == DriverCaps(3600.0, 4096) and caps["sleep"] == DriverCaps()
    # The ad shows the least a task costs here: any scheduler may ask at the low band.
    detected = Detected("CPU", 2, 8.0, 100.0, (), 0.0, 0.0)
    assert config.profile(detected).min_price == 0.05


def test_without_policy_settings_anyone_is_served_on_the_default_caps(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(f'[schedulers]\ndeny = ["{ID_B}"]\nserve = "anyone"\n')
    config = load_config(path)
    assert not config.schedulers.only_allowed and config.schedulers.slots is None
    assert config.schedulers.spend_per_hour == float("inf")
    assert config.scheduler_grace_s == 60.0 and config.schedulers_file is None
    assert {c.max_timeout_s for c in config.driver_caps().values()} == {3600.0}
    path.write_text('[schedulers]\nserve = "allowed"\n')  # the file, or nobody
    assert load_config(path).schedulers.only_allowed
