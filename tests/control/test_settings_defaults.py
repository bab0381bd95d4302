"""One default per setting: the controller built from Python and the one ``inscope run``
builds from its config behave alike."""

from __future__ import annotations

import dataclasses
import inspect

from _support import sim_scope

from inscope.config import ControlConfig
from inscope.control.focus import FocusLock
from inscope.control.steering import Steerer, SteerSettings
from inscope.control_stage import ControlStage

#: ControlConfig key -> FocusLock keyword
FOCUS_KEYS = {"focus_dither_um": "dither_um", "focus_step_um": "max_step_um",
              "focus_dof_um": "dof_um", "objective_na": "na",
              "wavelength_um": "wavelength_um", "immersion_index": "immersion_index",
              "focus_check_s": "check_every_s"}


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_steerer_config_and_settings_share_defaults():
    settings = dataclasses.asdict(SteerSettings())
    assert set(settings) == {"gain", "deadband_um", "max_step_um", "settle_s"}
    steerer, config = _defaults(Steerer), ControlConfig()
    for key, value in settings.items():
        assert steerer[key] == value, key
        assert getattr(config, key) == value, key


def test_focus_lock_and_config_share_defaults():
    lock, config = _defaults(FocusLock), ControlConfig()
    for ckey, fkey in FOCUS_KEYS.items():
        assert getattr(config, ckey) == lock[fkey], (ckey, fkey)


def test_python_and_the_default_config_build_the_same_controller():
    scope = sim_scope(seed=1, shape=(64, 64))
    stage = ControlStage(scope, ControlConfig(mode="steer"))
    plain = Steerer(scope)
    for attr in ("gain", "deadband_um", "max_step_um", "settle_s"):
        assert getattr(stage.steerer, attr) == getattr(plain, attr), attr
    lock = FocusLock(scope)
    for attr in ("dither_um", "max_step_um", "dof_um", "check_every_s"):
        assert getattr(stage.focus, attr) == getattr(lock, attr), attr
    stage.close()
