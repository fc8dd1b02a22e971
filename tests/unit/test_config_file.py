"""Loading and saving the YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lbrp_app import config
from lbrp_app.model import Backend, Config, Service, ServiceKey, config_to_dict, parse_config


def test_missing_and_empty_files_start_empty(tmp_path: Path) -> None:
    assert config.load(tmp_path / "nope.yaml") == Config()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert config.load(empty) == Config()


def test_bad_file_names_file_field_value_and_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = "services:\n  - {vip: 13.13.13.13, proto: tcp, port: 70000}\n"
    path.write_text(text)
    with pytest.raises(config.ConfigFileError) as err:
        config.load(path)
    msg = str(err.value)
    assert str(path) in msg and "services[0].port" in msg and "70000" in msg
    assert path.read_text() == text


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("services: [\n")
    with pytest.raises(config.ConfigFileError, match="not valid YAML"):
        config.load(path)


def test_save_then_load_round_trips_and_creates_folders(tmp_path: Path) -> None:
    cfg = parse_config({"frontend_port": 3, "services": [
        {"vip": "13.13.13.13", "proto": "tcp", "port": 80, "name": "x",
         "backends": [{"ip": "10.0.1.2", "port": 80, "weight": 0}]}]})
    path = tmp_path / "a" / "b" / "lbrp.yaml"
    config.save(path, cfg)
    assert config.load(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["lbrp.yaml"]  # no temp file left


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "lbrp.yaml"
    cfg = config.load(example)
    assert cfg.services, "the example should declare services"


@pytest.mark.parametrize("name", ["a: b", "'\"", "- x", "null", "123", "\x00\x85\ufeff\u2028",
                                  "\U0001F600 é", "  lead", "\t"])
def test_any_accepted_name_is_saved_and_loaded_back(tmp_path: Path, name: str) -> None:
    cfg = parse_config({"services": [{"vip": "13.13.13.13", "proto": "tcp", "port": 80,
                                      "name": name}]})
    path = tmp_path / "lbrp.yaml"
    config.save(path, cfg)
    assert config.load(path) == cfg


def _whole(cfg: Config) -> str:
    """The file as dumping the whole document in one go writes it."""
    return config.dump(Config()).splitlines(keepends=True)[0] + yaml.dump(
        config_to_dict(cfg), Dumper=config._Dumper, sort_keys=False, default_flow_style=False)


def test_dump_writes_again_only_the_services_that_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["a: b", "- x", "\U0001F600 \u2028", ""]
    cfg = parse_config({"tcp_fin_timeout": 20, "services": [
        {"vip": f"13.13.13.{i + 1}", "proto": "udp" if i % 2 else "tcp", "port": 80 + i,
         "name": names[i], "backends": [{"ip": f"10.0.1.{j + 2}", "port": 8000 + j,
                                         "weight": j} for j in range(i + 1)]}
        for i in range(4)]})
    assert config.dump(Config()) == _whole(Config())
    assert config.dump(cfg) == _whole(cfg)
    formatted: list[Service] = []
    real = config.service_text

    def counting(svc: Service) -> str:
        formatted.append(svc)
        return real(svc)

    monkeypatch.setattr(config, "service_text", counting)
    key = ServiceKey("13.13.13.3", "tcp", 82)
    changed = cfg.with_service(Service(key, "new", (Backend("10.0.1.9", 9, 3),)))
    text = config.dump(changed)
    assert formatted == [changed.services[key]]  # only the changed service
    assert text == _whole(changed)
    assert parse_config(yaml.safe_load(text)) == changed


@pytest.mark.parametrize("name", [
    "", "svc-1", "web_1.2", "_x", "1e3", "y", "x" * 256,  # written plain
    "yes", "No", "on", "null", "~", "123", "-1", "1.5", ".inf", "0x1F", "1_000", "0b101",
    "1:20", "2001-01-01", "<<", "=", "a: b", "- x", "#x", "x #y", " lead", "trail ", "'q'",
    '"dq"', "é", "\U0001F600", "\u2028", "a\nb", "a\n\nb  c\n", " ".join(["word"] * 50)])
def test_a_service_is_written_as_yaml_writes_it(name: str) -> None:
    for backends in ([], [{"ip": "10.0.1.2", "port": 80, "weight": 0},
                          {"ip": "10.0.0.9", "port": 65535, "weight": 256}]):
        svc = parse_config({"services": [{"vip": "13.13.13.13", "proto": "udp", "port": 1,
                                          "name": name, "backends": backends}]}
                           ).sorted_services()[0]
        assert config.service_text(svc) == yaml.dump(
            [svc.to_dict()], Dumper=config._Dumper, sort_keys=False, default_flow_style=False)


def _yaml_reads(text: str) -> object:
    try:
        return yaml.load(text, Loader=config._Loader)
    except yaml.YAMLError:
        return "refused"


def _sample() -> Config:
    return parse_config({"frontend_port": "s1-eth1", "backend_port": 2, "services": [
        {"vip": "13.13.13.13", "proto": "tcp", "port": 80, "name": "web-1",
         "backends": [{"ip": "10.0.1.2", "port": 8000, "weight": 10},
                      {"ip": "10.0.1.3", "port": 8001, "weight": 0}]},
        {"vip": "13.13.13.14", "proto": "udp", "port": 53, "name": "", "backends": []},
        {"vip": "13.13.13.15", "proto": "tcp", "port": 443, "name": "x",
         "backends": [{"ip": "10.0.1.4", "port": 443, "weight": 65535}]}]})


def test_the_saved_file_is_read_without_yaml_and_as_yaml_reads_it(tmp_path: Path) -> None:
    text = config.dump(_sample())
    doc = config.read_own_format(text)
    assert doc is not None and doc == _yaml_reads(text)
    path = tmp_path / "lbrp.yaml"
    config.save(path, _sample())
    assert config.load(path) == _sample()


@pytest.mark.parametrize("name", ["a: b", "yes", "null", "~", "123", "010", "1_000", "0x1F",
                                  "1:20", "1.5", "- x", "#x", " lead", "é", "2001-01-01"])
def test_a_name_yaml_would_not_read_as_written_leaves_the_file_to_yaml(
        tmp_path: Path, name: str) -> None:
    cfg = parse_config({"services": [{"vip": "13.13.13.13", "proto": "tcp", "port": 80,
                                      "name": name}]})
    text = config.dump(cfg)
    assert config.read_own_format(text) in (None, _yaml_reads(text))
    path = tmp_path / "lbrp.yaml"
    config.save(path, cfg)
    assert config.load(path) == cfg


def _edits(lines: list[str], i: int) -> list[list[str]]:
    """Hand edits of line ``i``: yaml reads each differently from dump()'s layout, or
    not at all."""
    line = lines[i]
    key, _, value = line.partition(": ")
    out = [lines[:i] + lines[i + 1:],  # dropped
           lines[:i] + [lines[i], lines[i]] + lines[i + 1:],  # twice
           lines[:i] + lines[i + 1:i + 2] + [line] + lines[i + 2:]]  # swapped with the next
    for new in (line + " ", line + " # note", line + "\r", "\t" + line, " " + line, line[1:],
                key + ":", key + ": " + "'" + value + "'", key + ': "' + value + '"',
                key + ": 0" + value, key + ": 0x1" + value, key + ": 1_0" + value,
                key + ": yes", key + ": ~", key + ": null", key + ": 1.5", key + ": []",
                key + ": {}", key + ": [" + value + "]", key + ": &a " + value, key + ": *a",
                key + ": !!str " + value, key + ": -" + value, key + ": " + value + ":",
                "---", "...", "%YAML 1.1", "? " + line, line.replace(": ", ":  ")):
        out.append(lines[:i] + [new] + lines[i + 1:])
    return out


def test_a_hand_edited_file_is_read_as_yaml_reads_it() -> None:
    lines = config.dump(_sample()).split("\n")
    tried = taken = 0
    for i in range(len(lines) - 1):
        for edit in _edits(lines, i):
            text = "\n".join(edit)
            own = config.read_own_format(text)
            tried += 1
            taken += own is not None
            assert own is None or own == _yaml_reads(text), (i, edit[i] if i < len(edit) else "")
    assert tried > 1000
    assert taken, "some edits keep dump()'s layout (a dropped setting, a new value)"


_HEAD = "services:\n- vip: 13.13.13.13\n  proto: tcp\n  port: 80\n  name: a\n"
_ITEM = "  - ip: 10.0.1.2\n    port: 1\n"


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "services:\n", "services: []\n", "services: []\n- vip: 1.2.3.4\n",
    _HEAD + "  backends:\n",  # no backend after "backends:"
    _HEAD + "  backends: []\n" + _ITEM + "    weight: 1\n",  # a backend after "[]"
    _HEAD + "  backends:\n" + _ITEM,  # a backend without its weight
    "services:\n    port: 1\n", "services:\n  proto: tcp\n",
    _HEAD + "  backends: []\n    weight: 1\n",
    "frontend_port: 1\nfrontend_port: 2\n", "frontend_port: 1\nservices: []\nbackend_port: 3\n",
    "\ufeffservices: []\n", _HEAD + "  backends: []\nmax_sessions: 100\n"])
def test_odd_files_are_read_as_yaml_reads_them(text: str) -> None:
    own = config.read_own_format(text)
    assert own is None or own == _yaml_reads(text)


@pytest.mark.parametrize(("text", "key"), [
    # a second "services" would drop every service above it
    (("services:\n- {vip: 13.13.13.13, proto: tcp, port: 80}\nmax_sessions: 1000\n"
     "services:\n- {vip: 14.14.14.14, proto: udp, port: 53}\n"), "services"),
    ("services:\n- vip: 13.13.13.13\n  proto: tcp\n  port: 80\n  port: 8080\n", "port"),
    (("services:\n- {vip: 13.13.13.13, proto: tcp, port: 80, backends: "
     "[{ip: 10.0.1.1, port: 80, weight: 0, weight: 70}]}\n"), "weight"),
    ("services:\n- {vip: 13.13.13.13, proto: tcp, port: 80, 'port': 81}\n", "port")])
def test_a_key_given_twice_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigFileError, match=f"found the key '{key}' twice"):
        config.load(path)
    assert yaml.safe_load(text)  # which yaml alone reads, keeping the last


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("services:\n- &s {vip: 13.13.13.13, proto: tcp, port: 80}\n"
                    "- <<: *s\n  port: 81\n")
    assert [k.port for k in config.load(path).services] == [80, 81]


@pytest.mark.parametrize("text", ["services: {}\n", "services: 0\n", "services: ''\n",
                                  "services: false\n",
                                  ("services:\n- {vip: 13.13.13.13, proto: tcp, port: 80, "
                                  "backends: {}}\n"),
                                  ("services:\n- {vip: 13.13.13.13, proto: tcp, port: 80, "
                                  "backends: 0}\n")])
def test_an_empty_value_of_the_wrong_type_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigFileError, match="must be a list"):
        config.load(path)


def test_a_list_key_left_empty_is_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "null.yaml"
    path.write_text("services:\n- vip: 13.13.13.13\n  proto: tcp\n  port: 80\n  backends:\n")
    assert config.load(path).services[ServiceKey("13.13.13.13", "tcp", 80)].backends == ()
    path.write_text("services:\n")
    assert config.load(path) == Config()


@pytest.mark.parametrize("text", [
    "services:\n" + "- " * 200_000 + "1\n",  # libyaml's composer crashed the process
    "services: " + "[" * 200_000 + "]" * 200_000 + "\n",
    "services:\n- " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n"])
def test_a_file_nested_too_deep_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigFileError, match="nested deeper than 64 levels"):
        config.load(path)
