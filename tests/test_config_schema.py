"""The rule table of config values (fastreid_ewth/config/schema.py): every rule accepts and refuses what it
declares, at its bounds; unusual values warn; the shipped configs and the defaults pass clean; messages name
the key, the value, its type, the range and the fix; docs/config.md is the table; tools/train_net.py stops
before OUTPUT_DIR exists."""
import logging

import pytest

from fastreid.config import get_cfg

from fastreid_ewth import LOSS_REGISTRY, add_ewth_config
from fastreid_ewth.config import check_config_values, schema
from fastreid_ewth.config.schema import RULES, Choice, ConfigValueError, Flag, Items, Number, Ref, loss_rules, review
from fastreid_ewth.engine import load_cfg
from fastreid_ewth.modeling.registry import registered_losses

from conftest import REPO
from test_bad_inputs import refused_in_process

ENTRIES = [LOSS_REGISTRY.get(name) for name in registered_losses()]
LOSS_RULES = tuple(rule for entry in ENTRIES for rule in loss_rules(entry))
ALL_RULES = RULES + LOSS_RULES
SHIPPED = sorted(str(p.relative_to(REPO)) for pattern in ("configs/*.yml", "projects/*.yml", "projects/zoo/*.yml")
                 for p in REPO.glob(pattern))


def defaults():
    return add_ewth_config(get_cfg())


DEFAULTS = defaults()


def with_values(cfg, **values):
    """A copy of ``cfg`` with ``{dotted key: value}`` set as given (no yacs type coercion)."""
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in values.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


# --------------------------------------------------------------------------------------------------------
# cases generated from the rules themselves
# --------------------------------------------------------------------------------------------------------
def _step(number, bound):
    return 1 if number.integer else 1e-6 * max(1.0, abs(bound))


def _edges(number, cfg):
    """``[(value, inside)]``: each bound and one step beyond it, inside or outside ``number``'s range."""
    cases = []
    for bound, is_lo, is_open in ((number.lo, True, number.lo_open), (number.hi, False, number.hi_open)):
        if bound is None:
            continue
        b = schema._bound(bound, cfg)
        assert b is not None, bound
        if number.integer:
            b = int(b)
        d = _step(number, b)
        inward, outward = (b + d, b - d) if is_lo else (b - d, b + d)
        cases += [(b, False), (inward, True)] if is_open else [(b, True), (outward, False)]
    return cases


def _number_cases(number, cfg):
    cases = _edges(number, cfg)
    good = next((v for v, ok in cases if ok), 1 if number.integer else 0.5)
    cases += [(str(good), False), (True, False), (float("nan"), False)]
    if number.integer:
        cases += [(float(good), False), (good + 0.5, False)]
    if number.hi is None:
        cases.append((float("inf"), not number.finite))
    if number.lo is None and number.hi is None:
        cases.append((-12.5, True))
    return cases


def _items_cases(items, cfg, default):
    n = items.lengths[0] if items.lengths else 1
    item_cases = [(v, ok) for v, ok in _number_cases(items.item, cfg)]
    cases = [([v] * n, ok) for v, ok in item_cases]
    good = next(v for v, ok in item_cases if ok)
    cases.append((good, False))  # not a list
    if items.lengths:
        cases.append(([good] * (max(items.lengths) + 1), False))
    if items.order and len(default) >= 2 and sorted(set(default)) == list(default):
        cases += [(list(default), True), (list(reversed(default)), False)]
        if items.order == "<":
            cases.append(([default[0], default[0]], False))
    return cases


def _choice_cases(choice):
    cases = [(o, True) for o in choice.options]
    if all(isinstance(o, str) for o in choice.options):
        cases += [(choice.options[0] + "X", False), (1, False)]
    else:
        cases += [(max(choice.options) + 1, False), (str(choice.options[0]), False), (True, False)]
    return cases


def cases_of(rule, cfg):
    default = schema.config_value(cfg, rule.key)
    if isinstance(rule.valid, Number):
        return _number_cases(rule.valid, cfg)
    if isinstance(rule.valid, Items):
        return _items_cases(rule.valid, cfg, default)
    if isinstance(rule.valid, Choice):
        return _choice_cases(rule.valid)
    assert isinstance(rule.valid, Flag), rule
    return [(True, True), (False, True), (1, False), ("True", False)]


def _base_for(rule):
    return with_values(DEFAULTS, **{rule.when[0]: rule.when[1][0]}) if rule.when else DEFAULTS


def _problems_of(rule, cfg):
    return [p for p in review(cfg, ALL_RULES)[0] if p.startswith(rule.key + " is ")]


@pytest.mark.parametrize("rule", ALL_RULES, ids=[r.key for r in ALL_RULES])
def test_each_rule_accepts_and_refuses_as_declared(rule):
    base = _base_for(rule)
    cases = cases_of(rule, base)
    assert any(ok for _, ok in cases) and any(not ok for _, ok in cases), cases
    for value, ok in cases:
        cfg = with_values(base, **{rule.key: value})
        problems = _problems_of(rule, cfg)
        if ok:
            assert not problems, (value, problems)
        else:
            assert len(problems) == 1, (value, problems)
            message = problems[0]
            # key, bad value, its type, the valid range (with the values of the keys it refers to), the fix
            assert message.startswith("{} is {!r} ({})".format(rule.key, value, type(value).__name__)), message
            assert rule.valid_text(cfg) in message and rule.fix in message and rule.what in message, message


def _unusual_edges(rule, cfg):
    """``[(value, unusual)]`` at the bounds of the rule's unusual range, all of them valid."""
    number = rule.valid.item if isinstance(rule.valid, Items) else rule.valid
    unusual = Number(lo=rule.unusual.lo, hi=rule.unusual.hi, lo_open=rule.unusual.lo_open,
                     hi_open=rule.unusual.hi_open, integer=number.integer)
    cases = _edges(unusual, cfg)
    if isinstance(rule.valid, Items):
        cases = [([v], u) for v, u in cases]
    return cases


UNUSUAL = [r for r in ALL_RULES if r.unusual is not None]


@pytest.mark.parametrize("rule", UNUSUAL, ids=[r.key for r in UNUSUAL])
def test_unusual_values_warn_and_the_values_next_to_them_do_not(rule):
    base = _base_for(rule)
    for value, unusual in _unusual_edges(rule, base):
        cfg = with_values(base, **{rule.key: value})
        problems, warnings = review(cfg, ALL_RULES)
        assert not _problems_of(rule, cfg), (value, problems)
        mine = [w for w in warnings if w.startswith(rule.key + " is ")]
        assert len(mine) == (1 if unusual else 0), (value, mine)
        if unusual:
            assert rule.why in mine[0] and rule.fix in mine[0] and rule.unusual_text(cfg) in mine[0], mine


def test_a_rule_with_a_condition_applies_only_under_it():
    rule = next(r for r in RULES if r.key == "SOLVER.ETA_MIN_LR")
    assert rule.when == ("SOLVER.SCHED", ("CosineAnnealingLR",))
    bad = with_values(DEFAULTS, **{"SOLVER.ETA_MIN_LR": 1.0, "SOLVER.BASE_LR": 0.001})
    assert not _problems_of(rule, bad)  # MultiStepLR does not read it
    assert _problems_of(rule, with_values(bad, **{"SOLVER.SCHED": "CosineAnnealingLR"}))


def test_a_refused_key_does_not_make_the_keys_bounded_by_it_look_wrong():
    cfg = load_cfg(str(REPO / "projects" / "Demo.yml"), ["SOLVER.MAX_EPOCH", "0"])
    problems, warnings = review(cfg, ALL_RULES)
    assert len(problems) == 1 and problems[0].startswith("SOLVER.MAX_EPOCH is 0 (int)")
    assert not warnings  # WARMUP_EPOCHS 1 and STEPS [9] are measured against a MAX_EPOCH that is refused


# --------------------------------------------------------------------------------------------------------
# the table itself
# --------------------------------------------------------------------------------------------------------
def test_every_rule_names_keys_the_config_has_and_each_key_has_one_rule():
    for rule in ALL_RULES:
        assert schema.config_value(DEFAULTS, rule.key) is not schema._MISSING, rule.key
        for kind in (rule.valid, getattr(rule.valid, "item", None), rule.unusual):
            for bound in (getattr(kind, "lo", None), getattr(kind, "hi", None)):
                if isinstance(bound, Ref):
                    assert schema.config_value(DEFAULTS, bound) is not schema._MISSING, (rule.key, bound)
        if rule.when:
            assert schema.config_value(DEFAULTS, rule.when[0]) is not schema._MISSING, rule.key
    keys = [rule.key for rule in ALL_RULES]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    for entry in ENTRIES:  # SCALE is the registry's check; the EWTH and centre keys have their own tables
        assert "SCALE" not in [rule.key for rule in getattr(entry, "rules", ())], entry.__name__
    assert not [k for k in keys if k.startswith(("MODEL.LOSSES.EWTH.", "MODEL.LOSSES.CENTER."))]


def test_the_defaults_pass_clean_with_every_loss_listed(caplog):
    for cfg in (DEFAULTS, with_values(DEFAULTS, **{"MODEL.LOSSES.NAME": tuple(registered_losses())})):
        with caplog.at_level(logging.WARNING, logger="fastreid_ewth.config.schema"):
            assert check_config_values(cfg) == []
    assert not caplog.records


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_config_passes_clean(path):
    cfg = load_cfg(str(REPO / path))
    assert review(cfg, ALL_RULES) == ([], [])
    assert check_config_values(cfg) == []


# --------------------------------------------------------------------------------------------------------
# check_config_values: messages, all problems at once, warnings, the loss nodes
# --------------------------------------------------------------------------------------------------------
def test_message_names_key_value_type_range_and_fix():
    with pytest.raises(ValueError) as error:
        check_config_values(load_cfg(str(REPO / "projects" / "Demo.yml"), ["SOLVER.BASE_LR", "-1.0"]))
    assert str(error.value) == ("SOLVER.BASE_LR is -1.0 (float), but it must be a number > 0 (the learning rate; "
                                "BoT uses 0.00035 with Adam); set e.g. SOLVER.BASE_LR 0.00035")


def test_every_refused_value_is_reported_at_once():
    cfg = load_cfg(str(REPO / "projects" / "Demo.yml"),
                   ["SOLVER.BASE_LR", "-1.0", "SOLVER.STEPS", "[9, 3]", "TEST.METRIC", "jaccard",
                    "MODEL.LOSSES.CE.EPSILON", "1.5", "MODEL.LOSSES.EWTH.VARIANT", "HNEWHT"])
    with pytest.raises(ConfigValueError) as error:
        check_config_values(cfg)
    message = str(error.value)
    assert message.startswith("5 config values are refused:")
    for key in ("SOLVER.BASE_LR is -1.0", "SOLVER.STEPS is [9, 3]", "TEST.METRIC is 'jaccard'",
                "MODEL.LOSSES.CE.EPSILON is 1.5", "MODEL.LOSSES.EWTH.VARIANT is 'HNEWHT'"):
        assert "\n  - " + key in message, message
    assert len(error.value.problems) == 5


def test_an_unusual_value_is_a_warning_not_an_error(caplog):
    cfg = load_cfg(str(REPO / "projects" / "Demo.yml"), ["SOLVER.BASE_LR", "5.0"])
    with caplog.at_level(logging.WARNING, logger="fastreid_ewth.config.schema"):
        warnings = check_config_values(cfg)
    assert warnings == ["SOLVER.BASE_LR is 5.0, which is allowed but unusual (> 1): a learning rate above 1 makes "
                        "these models diverge; if that is not what you meant, set e.g. SOLVER.BASE_LR 0.00035"]
    assert [r.getMessage() for r in caplog.records if r.name == "fastreid_ewth.config.schema"] == warnings


WITH_RULES = [e for e in ENTRIES if getattr(e, "rules", ())]


@pytest.mark.parametrize("entry", WITH_RULES, ids=[e.__name__ for e in WITH_RULES])
def test_a_listed_loss_is_checked_by_its_own_rules_an_unlisted_one_is_not(entry):
    rule = loss_rules(entry)[0]
    value = next(v for v, ok in cases_of(rule, DEFAULTS) if not ok)
    cfg = with_values(DEFAULTS, **{rule.key: value, "MODEL.LOSSES.NAME": ("NPairsLoss",)})
    check_config_values(cfg)  # not listed: its node is not read
    listed = with_values(cfg, **{"MODEL.LOSSES.NAME": (entry.__name__,)})
    with pytest.raises(ValueError) as from_run:
        check_config_values(listed)
    with pytest.raises(ValueError) as from_entry:
        entry.check_config(listed)  # what building the model checks: the same message
    assert str(from_run.value) == str(from_entry.value) == rule.message(value, listed)


@pytest.mark.parametrize("key, value, message", [
    ("MODEL.LOSSES.EWTH.EW_THRESHOLD", 1.5, "MODEL.LOSSES.EWTH.EW_THRESHOLD is 1.5"),  # the EWTH option table
    ("MODEL.LOSSES.CENTER.LR", 0.0, "MODEL.LOSSES.CENTER.LR is 0.0"),  # the centre loss's check
    ("MODEL.LOSSES.CE.SCALE", -1.0, "MODEL.LOSSES.CE.SCALE is -1.0"),  # the registry's SCALE check
])
def test_the_loss_nodes_own_checks_run_too(key, value, message):
    names = ("CrossEntropyLoss", "EWTHLoss", "CenterLoss")
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        check_config_values(with_values(DEFAULTS, **{"MODEL.LOSSES.NAME": names, key: value}))


def test_the_inference_tools_check_the_config_too(capsys):
    from fastreid_ewth.inference.cli import evaluate_main

    assert evaluate_main(["--query", "q.npz", "--gallery", "g.npz", "TEST.RERANK.LAMBDA", "1.5"]) == 2
    assert "TEST.RERANK.LAMBDA is 1.5 (float), but it must be a number in [0, 1]" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# docs/config.md, and the command line
# --------------------------------------------------------------------------------------------------------
def test_docs_config_md_is_the_rendered_table():
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert text == schema.render_config_doc(), (
        "docs/config.md is out of date: regenerate it with "
        "python -c \"from fastreid_ewth.config.schema import render_config_doc as r; print(r(), end='')\" "
        "> docs/config.md")
    for rule in ALL_RULES:
        assert "`{}`".format(rule.key) in text


def test_train_net_refuses_before_anything_is_written(tmp_path, monkeypatch):
    shown, out = refused_in_process(tmp_path, monkeypatch, "SOLVER.MAX_EPOCH", "0", "SOLVER.BASE_LR", "-1.0")
    assert "2 config values are refused" in shown, shown[-2000:]
    assert ("SOLVER.MAX_EPOCH is 0 (int), but it must be an integer >= 1 (the number of training epochs); "
            "set e.g. SOLVER.MAX_EPOCH 120") in shown
    assert "SOLVER.BASE_LR is -1.0 (float), but it must be a number > 0" in shown
    assert not out.exists()


def test_an_integer_for_a_float_key_is_the_number_meant(caplog):
    from fastreid_ewth.engine import load_cfg

    cfg = load_cfg("", ["SOLVER.BASE_LR", "5", "SOLVER.MAX_EPOCH", "3", "SOLVER.MOMENTUM", "0"])
    assert cfg.SOLVER.BASE_LR == 5.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.MAX_EPOCH == 3 and isinstance(cfg.SOLVER.MAX_EPOCH, int)
    assert cfg.SOLVER.MOMENTUM == 0.0 and isinstance(cfg.SOLVER.MOMENTUM, float)
    with caplog.at_level(logging.WARNING, logger="fastreid_ewth.config.schema"):
        check_config_values(cfg)
    assert any("SOLVER.BASE_LR is 5.0, which is allowed but unusual" in r.getMessage() for r in caplog.records)
    # the other way round stays refused, with the key and how to write it
    with pytest.raises(ValueError, match=r"SOLVER.MAX_EPOCH.*integer without a decimal point"):
        load_cfg("", ["SOLVER.MAX_EPOCH", "3.5"])
