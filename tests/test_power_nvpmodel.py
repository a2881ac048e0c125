"""nvpmodel.conf parsing, `nvpmodel -q` parsing and safe mode switches, with fake runners."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgert.errors import (
    CommandError,
    CommandTimeoutError,
    InvalidArgumentError,
    NotSupportedError,
    PermissionDeniedError,
    RebootRequiredError,
)
from edgert.power import NvpModel, parse_nvpmodel_conf, parse_nvpmodel_query
from edgert.testing.jetson import FakeCommandRunner, NvpConf, build_jetson_tree


@pytest.fixture
def tree(tmp_path: Path):
    with build_jetson_tree(tmp_path, "jp6-agx-orin") as t:
        yield t


@pytest.fixture
def super_tree(tmp_path: Path):
    with build_jetson_tree(tmp_path, "jp6-orin-nx", nvpmodel_conf=NvpConf.SUPER) as t:
        yield t


# -- the configuration ------------------------------------------------------------------------

def test_standard_conf_modes_and_caps(tree) -> None:
    nvp = NvpModel(tree.root, runner=tree.runner())
    assert [(m.id, m.name) for m in nvp.modes] == [(0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W")]
    maxn, m15, m30 = nvp.modes
    assert maxn.cores_online == 12
    assert maxn.tpc_pg_mask == 0
    assert maxn.cpu_max_freq_khz is None  # -1: no cap
    assert maxn.gpu_max_freq_hz is None
    assert maxn.emc_max_freq_hz is None  # EMC 0: no cap
    assert m15.online_cores == frozenset(range(4))
    assert m15.tpc_pg_mask == 248
    assert m15.cpu_max_freq_khz == 1113600
    assert dict(m15.cpu_max_freq_khz_by_cluster) == {
        "CPU_A78_0": 1113600, "CPU_A78_1": 1113600, "CPU_A78_2": 1113600}
    assert m15.gpu_max_freq_hz == 408000000
    assert m15.emc_max_freq_hz == 2133000000
    assert m30.cores_online == 8
    assert m30.tpc_pg_mask == 240
    assert nvp.default == m30
    assert nvp.config.problems == ()
    assert set(nvp.config.params) >= {"CPU_ONLINE", "TPC_POWER_GATING", "CPU_A78_0", "GPU", "EMC"}
    assert nvp.config.params["EMC"].args["MAX_FREQ"] == "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap"
    assert nvp.config.params["GPU"].args["MAX_FREQ_KNEXT"].endswith("devfreq_dev/max_freq")


def test_conf_with_an_id_gap(tmp_path: Path) -> None:
    # AGX Orin's mode table (the Orin NX fake has 10W/15W/25W; see test_orin_nx_fake_modes).
    with build_jetson_tree(tmp_path, "jp6-agx-orin", nvpmodel_conf=NvpConf.ID_GAP) as tree:
        nvp = NvpModel(tree.root, runner=tree.runner())
        assert [m.id for m in nvp.modes] == [0, 1, 3]
        assert nvp.default is not None
        assert nvp.default.name == "MODE_30W"
        assert nvp.mode(3).name == "MODE_30W"
        with pytest.raises(InvalidArgumentError, match="MODE_30W \\(3\\)"):
            nvp.mode(2)
        assert nvp.current().id == 3


def test_conf_default_naming_a_missing_id(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp6-agx-orin", nvpmodel_conf=NvpConf.MISSING_DEFAULT) \
            as tree:
        nvp = NvpModel(tree.root, runner=tree.runner())
        assert nvp.config.default_id == 7
        assert nvp.default is None
        assert nvp.config.problems == ("PM_CONFIG DEFAULT=7 names no POWER_MODEL (ids: 0, 1, 2)",)
        assert nvp.current().name == "MODE_30W"


def test_super_conf_file(super_tree) -> None:
    conf = super_tree.root / "etc/nvpmodel.conf"
    assert conf.is_symlink()
    assert conf.resolve().name == "nvpmodel_p3767_0000_super.conf"
    nvp = NvpModel(super_tree.root, runner=super_tree.runner())
    assert [m.name for m in nvp.modes] == ["MAXN_SUPER", "10W", "15W", "25W", "40W"]
    assert nvp.default is not None
    assert nvp.default.name == "40W"
    assert nvp.mode("maxn_super").id == 0
    assert nvp.mode("40W").gpu_max_freq_hz == 1173000000


def test_malformed_conf_is_a_clear_error(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, nvpmodel_conf=NvpConf.MALFORMED) as tree:
        nvp = NvpModel(tree.root)
        with pytest.raises(InvalidArgumentError, match=r"nvpmodel.conf:\d+: malformed section"):
            _ = nvp.modes


@pytest.mark.parametrize(("text", "match"), [
    ("CORE_0 1\n", "outside any section"),
    ("< POWER_MODEL ID=x NAME=A >\n", "numeric ID"),
    ("< POWER_MODEL ID=1 NAME=A >\n< POWER_MODEL ID=1 NAME=B >\n", "appears twice"),
    ("< POWER_MODEL ID=1 NAME=A >\nGPU MAX_FREQ\n", "PARAM ARG VALUE"),
    ("< PARAM TYPE=FILE NAME=X >\nA /b\n", "no POWER_MODEL"),
    ("< PM_CONFIG DEFAULT=MAXN >\n", "must be a mode id"),
    ("< PARAM TYPE=FILE >\n", "without NAME"),
])
def test_malformed_texts(text: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        parse_nvpmodel_conf(text)


def test_parser_tolerates_spacing_comments_and_unknown_sections() -> None:
    cfg = parse_nvpmodel_conf(
        "# header\n"
        "<PARAM TYPE=CLOCK NAME=EMC>\n"
        "MAX_FREQ   /sys/kernel/nvpmodel_emc_cap/emc_iso_cap   # trailing comment\n"
        "<  FAN_CONFIG  NAME=quiet >\nwhatever goes here\n"
        "<   POWER_MODEL   ID = 5   NAME=odd_spacing>\n"
        "  EMC   MAX_FREQ   2133000000\n"
        "TPC_POWER_GATING TPC_PG_MASK 1\n"
        "<PM_CONFIG DEFAULT=5>\n")
    (mode,) = cfg.modes
    assert (mode.id, mode.name, mode.emc_max_freq_hz, mode.tpc_pg_mask) == (
        5, "odd_spacing", 2133000000, 1)
    assert mode.online_cores is None
    assert mode.cores_online is None
    assert cfg.default == mode
    assert cfg.params["EMC"].args["MAX_FREQ"] == "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap"


def test_jp6_super_no_cap_values() -> None:
    cfg = parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=MAXN_SUPER >\n"
                              "CPU_A78_0 MAX_FREQ 9223372036854775807\nGPU MAX_FREQ 2147483647\n")
    assert cfg.modes[0].cpu_max_freq_khz is None
    assert cfg.modes[0].gpu_max_freq_hz is None


def test_missing_conf(tmp_path: Path) -> None:
    nvp = NvpModel(tmp_path)
    with pytest.raises(NotSupportedError, match="no nvpmodel configuration"):
        _ = nvp.modes
    assert nvp.saved_mode_id() is None


# -- querying ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("NV Power Mode: MODE_30W\n2\n", ("MODE_30W", 2)),
    ("NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_30W\n2\n", ("MODE_30W", 2)),
    ("NV Fan Mode:cool\nNV Power Mode: MODE_15W\n1\n", ("MODE_15W", 1)),
    ("NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13\n"
     "NV Power Mode: MAXN\nNVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13\n"
     "0\n", ("MAXN", 0)),
    ("NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: parsing done for /etc/nvpmodel.conf\n"
     "NVPM VERB: Current mode: NV Power Mode: 40W\n4\n"
     "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: PATH /sys/devices/system/cpu/cpu0/online: "
     "REAL_VAL: 1 CONF_VAL: 1\n", ("40W", 4)),
    ("NV Power Mode: 15W\n", ("15W", None)),
    ("NVPM ERROR: something broke\n", (None, None)),
    ("", (None, None)),
])
def test_parse_query(text: str, expected: tuple[str | None, int | None]) -> None:
    assert parse_nvpmodel_query(text) == expected


def test_current_through_each_query_variant(tree) -> None:
    for runner in (tree.runner(), tree.runner(fan_warning=True), tree.runner(as_root=False)):
        mode = NvpModel(tree.root, runner=runner).current()
        assert (mode.id, mode.name, mode.tpc_pg_mask) == (2, "MODE_30W", 240)
    assert NvpModel(tree.root).saved_mode_id() == 2


def test_current_for_a_mode_the_conf_lacks(tree) -> None:
    runner = FakeCommandRunner(conf_text="< POWER_MODEL ID=9 NAME=CUSTOM >\nGPU MAX_FREQ -1\n")
    mode = NvpModel(tree.root, runner=runner).current()
    assert (mode.id, mode.name, mode.tpc_pg_mask) == (9, "CUSTOM", None)


def test_current_errors(tree, tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError, match="no such program"):
        NvpModel(tree.root, runner=tree.runner(missing=["nvpmodel"])).current()
    runner = tree.runner(hang=["nvpmodel"])
    nvp = NvpModel(tree.root, runner=runner, timeout_s=2.5)
    with pytest.raises(CommandTimeoutError):
        nvp.current()
    assert runner.calls[-1].timeout == 2.5

    def denied(argv, *, stdin=None, timeout=None):
        return FakeResult(1, "", "NVPM ERROR: Error opening /etc/nvpmodel.conf: 13\n")

    with pytest.raises(PermissionDeniedError, match="13"):
        NvpModel(tree.root, runner=denied).current()

    def garbage(argv, *, stdin=None, timeout=None):
        return FakeResult(0, "hello\n", "")

    with pytest.raises(CommandError, match="printed no power mode"):
        NvpModel(tree.root, runner=garbage).current()


class FakeResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


# -- switching --------------------------------------------------------------------------------

def test_switch_without_reboot_is_confirmed_by_a_second_query(super_tree) -> None:
    runner = super_tree.runner()
    nvp = NvpModel(super_tree.root, runner=runner)
    assert nvp.current().name == "40W"
    result = nvp.set("25W")
    assert result.changed
    assert not result.reboot_pending
    assert (result.previous.name, result.mode.name) == ("40W", "25W")
    assert [c.argv[1:] for c in runner.calls] == [("-q",), ("-q",), ("-m", "3"), ("-q",)]
    assert runner.calls[2].stdin == ""  # a prompt would read end-of-file, never a terminal
    assert nvp.saved_mode_id() == 3
    assert nvp.set(3).changed is False  # already there: nothing runs
    assert runner.calls[-1].argv[1:] == ("-q",)


def test_switch_by_id_name_and_mode(super_tree) -> None:
    nvp = NvpModel(super_tree.root, runner=super_tree.runner())
    assert nvp.set(2).mode.name == "15W"
    assert nvp.set("maxn_super").mode.id == 0
    assert nvp.set(nvp.mode("25W")).mode.id == 3


def test_unknown_mode_is_refused_before_running_anything(super_tree) -> None:
    runner = super_tree.runner()
    nvp = NvpModel(super_tree.root, runner=runner)
    for bad in (5, "TURBO", True):
        with pytest.raises(InvalidArgumentError, match="modes: MAXN_SUPER"):
            nvp.set(bad)  # type: ignore[arg-type]
    assert runner.calls == []


@pytest.mark.parametrize(("target", "why"), [
    ("MODE_15W", "TPC power-gating mask 240 → 248"),
    ("MAXN", "online CPU cores 8 → 12"),
])
def test_reboot_needing_switch_is_refused_without_running(tree, target: str, why: str) -> None:
    runner = tree.runner()
    nvp = NvpModel(tree.root, runner=runner)
    with pytest.raises(RebootRequiredError, match=why):
        nvp.set(target)
    assert all(c.argv[1] == "-q" for c in runner.calls)
    assert runner.mode_id == 2
    assert not runner.reboot_requested


def test_reboot_prompt_is_never_answered_implicitly(tree) -> None:
    # Our own analysis is bypassed (the conf claims no change) to reach nvpmodel's prompt.
    runner = tree.runner()
    conf = tree.root / "etc/nvpmodel.conf"
    text = conf.read_text().replace("TPC_PG_MASK 248", "TPC_PG_MASK 240")
    text = text.replace("CPU_ONLINE CORE_4 0", "CPU_ONLINE CORE_4 1")
    fake_conf = tree.root / "lying.conf"
    fake_conf.write_text(text.replace("CORE_5 0", "CORE_5 1").replace("CORE_6 0", "CORE_6 1")
                         .replace("CORE_7 0", "CORE_7 1"))
    nvp = NvpModel(tree.root, runner=runner, conf=fake_conf)
    with pytest.raises(RebootRequiredError, match="prompt was not answered"):
        nvp.set("MODE_15W")
    assert runner.calls[-1].stdin == ""
    assert runner.mode_id == 2
    assert not runner.reboot_requested


def test_allow_reboot_answers_yes_and_reports_the_pending_reboot(tree) -> None:
    runner = tree.runner()
    nvp = NvpModel(tree.root, runner=runner)
    result = nvp.set("MODE_15W", allow_reboot=True)
    assert result.reboot_pending
    assert result.changed
    assert result.mode.name == "MODE_15W"
    assert "rebooting" in result.output
    assert runner.calls[-1].stdin == "YES\n"
    assert runner.reboot_requested
    assert nvp.saved_mode_id() == 1


def test_exit_code_is_not_trusted(super_tree) -> None:
    runner = super_tree.runner(ignore_set=True)
    nvp = NvpModel(super_tree.root, runner=runner)
    with pytest.raises(CommandError, match="exited 0 but the mode is 40W \\(4\\), not 25W"):
        nvp.set("25W")


def test_switch_without_root(super_tree) -> None:
    nvp = NvpModel(super_tree.root, runner=super_tree.runner(as_root=False))
    with pytest.raises(PermissionDeniedError, match=r"needs root|was refused") as info:
        nvp.set("25W")
    assert info.value.hint is not None
    assert "root" in info.value.hint


def test_switch_timeout(super_tree) -> None:
    runner = super_tree.runner(hang=["nvpmodel -m"])
    nvp = NvpModel(super_tree.root, runner=runner, timeout_s=3.0)
    with pytest.raises(CommandTimeoutError):
        nvp.set("25W")
    assert runner.mode_id == 4


def test_reported_failure_is_an_error_even_if_the_query_agrees(super_tree) -> None:
    inner = super_tree.runner()

    def partial(argv, *, stdin=None, timeout=None):
        res = inner(argv, stdin=stdin, timeout=timeout)
        if "-m" in argv:
            return FakeResult(0, res.stdout, "NVPM ERROR: Error writing 2 to "
                              "/sys/devices/gpu.0/fbp_pg_mask: 19\n"
                              "NVPM ERROR: failed to set power mode!\n")
        return res

    with pytest.raises(CommandError, match="failed to set power mode"):
        NvpModel(super_tree.root, runner=partial).set("25W")


def test_current_mode_missing_from_conf_needs_allow_reboot(super_tree) -> None:
    runner = super_tree.runner(mode_id=4)
    nvp = NvpModel(super_tree.root, runner=runner,
                   conf=_write(super_tree.root / "other.conf",
                               "< POWER_MODEL ID=0 NAME=A >\nGPU MAX_FREQ -1\n"))
    with pytest.raises(RebootRequiredError, match="not in"):
        nvp.set("A")


def test_bad_timeout() -> None:
    with pytest.raises(InvalidArgumentError):
        NvpModel(timeout_s=0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- caps above INT_MAX and the no-cap sentinels (trial r2) -----------------------------------

@pytest.mark.parametrize(("value", "cap"), [
    ("3199000000", 3199000000),  # Orin Nano super 25W: a real cap above 2**31 - 1 Hz
    ("2500000000", 2500000000),
    ("2133000000", 2133000000),
    ("-1", None),  # INT_MAX: no cap
    ("2147483647", None),  # how -p --verbose echoes -1
    ("9223372036854775807", None),  # LLONG_MAX on JetPack 6 super builds
    ("0", None),  # EMC MAX_FREQ 0: jetson_clocks only honours a positive emc_iso_cap
])
def test_emc_cap_sentinels_only_mean_no_cap(value: str, cap: int | None) -> None:
    conf = parse_nvpmodel_conf(f"< POWER_MODEL ID=0 NAME=X >\nEMC MAX_FREQ {value}\n"
                               f"GPU MAX_FREQ {value}\n< PM_CONFIG DEFAULT=0 >\n")
    assert conf.modes[0].emc_max_freq_hz == cap
    if value != "0":
        assert conf.modes[0].gpu_max_freq_hz == cap


# -- the Orin NX fake's own modes (trial r7) --------------------------------------------------

@pytest.mark.parametrize("flavour", ["jp6-orin-nx", "jp5-orin-nx"])
def test_orin_nx_fake_modes(tmp_path: Path, flavour: str) -> None:
    with build_jetson_tree(tmp_path, flavour) as tree:
        assert (tree.root / "etc/nvpmodel.conf").resolve().name == "nvpmodel_p3767_0000.conf"
        nvp = NvpModel(tree.root, runner=tree.runner())
        assert [(m.id, m.name, m.cores_online, m.tpc_pg_mask, m.fbp_pg_mask)
                for m in nvp.modes] == [(0, "MAXN", 8, 240, 2), (1, "10W", 4, 252, 2),
                                        (2, "15W", 4, 252, 2), (3, "25W", 8, 240, 2)]
        assert nvp.config.default_id == 2
        assert nvp.current().name == "15W"
        assert "FBP_POWER_GATING" in nvp.config.params
        assert nvp.config.params["FBP_POWER_GATING"].args["FBP_PG_MASK"] == \
            "/sys/devices/gpu.0/fbp_pg_mask"
        assert nvp.mode("10W").emc_max_freq_hz == 2133000000
        assert nvp.mode("15W").emc_max_freq_hz is None
        # 15W -> 25W brings cores 4-7 online and changes the TPC mask: a reboot.
        assert nvp.mode("15W").reboot_reasons(nvp.mode("25W"))
        assert not nvp.mode("15W").reboot_reasons(nvp.mode("10W"))
