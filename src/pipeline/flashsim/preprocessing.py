"""From physics columns to the flow's unconstrained space and back.

A FlashSim flow never sees a raw NanoAOD variable. Each reco variable becomes one *model column*
with a smooth, unbounded distribution, and the flow works on the standardised model columns (zuko's
splines act on [-5, 5]; outside they are the identity, so standardise first):

* pT and mass: log of the ratio to the generator-level value (mass: ``log((m + 1) / (m_gen + 1))``
  since a gen jet of one particle has m = 0);
* eta: difference to gen; phi: difference to gen wrapped to [-pi, pi);
* scores in (0, 1) (``btagDeepFlavB``, ``qgl``): logit; a score saturated to exactly 1.0 in float32
  (a fifth of the qgl values) is a category, dequantised just above the largest finite logit;
* ``btagDeepFlavB = -1`` outside the tracker is a category, not a value: the flow is trained on a
  placeholder (a random draw from the in-tracker logits) and the decoder writes -1 wherever the
  generated jet is outside ``btag_abs_eta_max`` (the rule of the reference simulation, checked on
  the training table);
* integers and booleans (``nConstituents``, ``jetId``, charge flip, IDs): dequantised, ``k + u`` with
  ``u ~ U(0, 1)``, and floored back (``nConstituents`` as ``log(k + u)``);
* ``pfRelIso04_all``: ``log(iso + 1e-3)``, with iso = 0 dequantised just below ``log(1e-3)``;
* ``dxy``, ``dz``, ``ip3d``: ``asinh(x / scale)``, signed and log-like in the tails, with
  ``scale`` = 10 um + the size of the muon's expected displacement from its gen ancestors
  (:func:`ip_scales`), and dxy/dz signed relative to the expected ones: prompt muons in units of
  10 um, non-prompt ones in units of their mean flight. (``log(ip3d)``, and ``asinh`` in units of
  10 um for all muons, put the non-prompt tail beyond 0.3 cm at the edge of the splines' [-5, 5]
  after standardisation, where a flow is the identity: the flow under-produced it.) Fake muons,
  without a gen muon, keep the 10 um unit.

Conditions are encoded the same way (logs of pT and distances, one-hot flavours; a non-prompt
muon's expected dxy and dz from its gen ancestors' mean flight as ``asinh(x / 10 um)``, signed) and
standardised by the model. Encoders return ``float32`` matrices; decoders return contract dtypes
(:data:`pipeline.nanoaod.JET` / :data:`pipeline.nanoaod.MUON`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline import nanoaod
from pipeline.errors import MissingColumnError

EPS_SCORE = 1e-6
FLIGHT_FLOOR_CM = 1e-4  # log(flight + 1 um): prompt muons (flight 0) sit at log(1e-4)
ISO_OFFSET = 1e-3
IP_SCALE_CM = 1e-3  # 10 um
MUON_MASS_GEV = 0.10566
JET_ID_VALUES = np.array([0, 2, 6], dtype=np.int32)  # fails tight, tight, tight + lepton veto
PARTON_CLASSES = ("unknown", "light", "charm", "bottom", "gluon")

#: Model columns (order of the flow's features) per object; ``fake_*`` for the fake-object flows.
JET_TARGETS = ("log_pt_ratio", "deta", "dphi", "log_mass_ratio", "logit_btag", "logit_qgl",
               "log_nconst", "jetid_ord")
MUON_TARGETS = ("log_pt_ratio", "deta", "dphi", "charge_flip", "log_iso", "id_ord", "asinh_dxy_rel",
                "asinh_dz_rel", "asinh_ip3d_rel")
FAKE_JET_TARGETS = ("log_pt", "eta", "phi", "log_mass_over_pt", "logit_btag", "logit_qgl", "log_nconst",
                    "jetid_ord")
FAKE_MUON_TARGETS = ("log_pt", "eta", "phi", "charge", "log_iso", "id_ord", "asinh_dxy", "asinh_dz",
                     "asinh_ip3d")

#: Dequantised integer targets (``class + u``) and their number of classes: the ones a model may
#: generate with a classifier instead of the flow (``flashsim.<obj>.categorical``).
INTEGER_TARGETS = {"jets": {"jetid_ord": 3}, "muons": {"charge_flip": 2, "id_ord": 3}}

#: Conditions (gen object + event context) per object, names of the encoded columns.
JET_CONDITIONS = ("log_gen_pt", "gen_eta", "log_gen_mass", *(f"parton_{c}" for c in PARTON_CLASSES),
                  "hadron_c", "hadron_b", "n_genjets", "log_nearest_genjet_dr", "log_nearest_genjet_pt",
                  "log_nearest_genmuon_dr", "log_genmet_pt")
MUON_CONDITIONS = ("log_gen_pt", "gen_eta", "gen_charge", "gen_isPrompt", "gen_fromHadron", "gen_fromPromptTau",
                   "log_gen_flight", "asinh_gen_expected_dxy", "asinh_gen_expected_dz", "n_genjets",
                   "log_nearest_genjet_dr", "log_nearest_genjet_pt", "log_genjet_sumpt_dr04",
                   "log_nearest_genmuon_dr", "log_genmet_pt")
FAKE_CONDITIONS = ("n_genjets", "log_genmet_pt", "n_fakes")

#: Table columns each encoder reads.
JET_CONDITION_COLUMNS = ("gen_pt", "gen_eta", "gen_mass", "gen_partonFlavour", "gen_hadronFlavour", "ctx_n_genjets",
                         "ctx_nearest_genjet_dr", "ctx_nearest_genjet_pt", "ctx_nearest_genmuon_dr", "ctx_genmet_pt")
MUON_CONDITION_COLUMNS = ("gen_pt", "gen_eta", "gen_charge", "gen_isPrompt", "gen_fromHadron", "gen_fromPromptTau",
                          "gen_flight_cm", "gen_expected_dxy_cm", "gen_expected_dz_cm", "ctx_n_genjets",
                          "ctx_nearest_genjet_dr", "ctx_nearest_genjet_pt", "ctx_genjet_sumpt_dr04",
                          "ctx_nearest_genmuon_dr", "ctx_genmet_pt")
FAKE_CONDITION_COLUMNS = ("ctx_n_genjets", "ctx_genmet_pt", "ctx_n_fakes")

TARGETS = {"jets": JET_TARGETS, "muons": MUON_TARGETS}
FAKE_TARGETS = {"jets": FAKE_JET_TARGETS, "muons": FAKE_MUON_TARGETS}
CONDITIONS = {"jets": JET_CONDITIONS, "muons": MUON_CONDITIONS}
CONDITION_COLUMNS = {"jets": JET_CONDITION_COLUMNS, "muons": MUON_CONDITION_COLUMNS}


def _col(table: Mapping, name: str, what: str) -> np.ndarray:
    try:
        return np.asarray(table[name])
    except KeyError:
        raise MissingColumnError(f"{what}: no column {name!r}") from None


def wrap_phi(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS_SCORE, 1 - EPS_SCORE)
    return np.log(p) - np.log1p(-p)


# Scores are float32: the largest value below 1 is 1 - 2^-24 (logit 16.64). A score that saturated to
# exactly 1.0 (a fifth of all qgl values) is a point mass; it is dequantised over [SCORE_ONE_LOGIT,
# SCORE_ONE_LOGIT + 1) and decoded back to exactly 1.0.
SCORE_ONE_LOGIT = 16.7
SCORE_FLOOR = 1e-12


def _encode_score(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    one = p >= 1.0
    q = np.clip(p, SCORE_FLOOR, 1 - 2.0**-24)
    out = np.log(q) - np.log1p(-q)
    out[one] = SCORE_ONE_LOGIT + rng.uniform(size=one.sum())
    return out


def _decode_score(x: np.ndarray) -> np.ndarray:
    return np.where(x >= SCORE_ONE_LOGIT, 1.0, _sigmoid(x)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _parton_onehot(flav: np.ndarray) -> np.ndarray:
    a = np.abs(flav.astype(np.int64))
    cls = np.select([a == 0, (a >= 1) & (a <= 3), a == 4, a == 5, a == 21], range(5), 0)
    return np.eye(5, dtype=np.float32)[cls]


# --------------------------------------------------------------------------------------------
# conditions
# --------------------------------------------------------------------------------------------
def encode_conditions(obj: str, table: Mapping) -> np.ndarray:
    """The (n, len(CONDITIONS[obj])) condition matrix of gen objects (training-table columns)."""
    what = f"FlashSim {obj} conditions"
    c = {k: _col(table, k, what).astype(np.float64) for k in CONDITION_COLUMNS[obj]}
    common = [c["ctx_n_genjets"], np.log(c["ctx_nearest_genjet_dr"] + 1e-3), np.log1p(c["ctx_nearest_genjet_pt"])]
    if obj == "jets":
        cols = [np.log(np.maximum(c["gen_pt"], 1e-3)), c["gen_eta"], np.log1p(np.maximum(c["gen_mass"], 0))]
        onehot = _parton_onehot(c["gen_partonFlavour"])
        had = c["gen_hadronFlavour"]
        extra = [had == 4, had == 5]
        rest = [*common, np.log(c["ctx_nearest_genmuon_dr"] + 1e-3), np.log1p(c["ctx_genmet_pt"])]
        out = np.column_stack([*cols, onehot, *extra, *rest])
    else:
        cols = [np.log(np.maximum(c["gen_pt"], 1e-3)), c["gen_eta"], c["gen_charge"], c["gen_isPrompt"],
                c["gen_fromHadron"], c["gen_fromPromptTau"], np.log(c["gen_flight_cm"] + FLIGHT_FLOOR_CM),
                np.arcsinh(c["gen_expected_dxy_cm"] / IP_SCALE_CM), np.arcsinh(c["gen_expected_dz_cm"] / IP_SCALE_CM)]
        rest = [*common, np.log1p(c["ctx_genjet_sumpt_dr04"]), np.log(c["ctx_nearest_genmuon_dr"] + 1e-3),
                np.log1p(c["ctx_genmet_pt"])]
        out = np.column_stack([*cols, *rest])
    return out.astype(np.float32)


def encode_fake_conditions(table: Mapping) -> np.ndarray:
    what = "FlashSim fake conditions"
    c = {k: _col(table, k, what).astype(np.float64) for k in FAKE_CONDITION_COLUMNS}
    return np.column_stack([c["ctx_n_genjets"], np.log1p(c["ctx_genmet_pt"]), c["ctx_n_fakes"]]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
def _btag_placeholder(logit_b: np.ndarray, missing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace the category ``btag = -1`` by draws from the in-tracker logits (a smooth density)."""
    out = logit_b.copy()
    pool = logit_b[~missing]
    if missing.any():
        out[missing] = rng.choice(pool, missing.sum()) if len(pool) else rng.normal(size=missing.sum())
    return out


def _jet_common(t: Mapping, rng: np.random.Generator, what: str) -> dict:
    btag = _col(t, "reco_btagDeepFlavB", what).astype(np.float64)
    missing = btag < 0
    n = len(btag)
    jet_id = _col(t, "reco_jetId", what).astype(np.int64)
    return {
        "logit_btag": _btag_placeholder(_encode_score(btag.clip(0), rng), missing, rng),
        "logit_qgl": _encode_score(_col(t, "reco_qgl", what), rng),
        "log_nconst": np.log(_col(t, "reco_nConstituents", what).astype(np.float64) + rng.uniform(size=n)),
        "jetid_ord": np.searchsorted(JET_ID_VALUES, jet_id).clip(0, 2) + rng.uniform(size=n),
    }


def _encode_iso(iso: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``log(iso + 1e-3)``; the point mass iso = 0 (about 20% of the muons) is spread uniformly over
    the unit interval just below ``log(1e-3)``, so that the flow sees a density and the decoder
    maps everything below ``log(1e-3)`` back to exactly 0."""
    out = np.log(iso.clip(0) + ISO_OFFSET)
    zero = iso <= 0
    out[zero] = np.log(ISO_OFFSET) - rng.uniform(size=zero.sum())
    return out


def _decode_iso(x: np.ndarray) -> np.ndarray:
    return np.where(x < np.log(ISO_OFFSET), 0.0, np.exp(x) - ISO_OFFSET).clip(0, None).astype(np.float32)


def ip_scales(t: Mapping, what: str) -> dict[str, np.ndarray]:
    """Per muon, the unit [cm] and the sign of its impact parameters in the model columns:
    ``IP_SCALE_CM`` plus the size of the expected displacement (``gen_expected_dxy_cm``,
    ``gen_expected_dz_cm``, and the ip3d of the two), and the sign of the expected dxy/dz (+1 where
    0). A prompt muon's IPs stay in units of 10 um; a non-prompt one's are ~ an Exp(1) multiple of
    its ancestors' mean flight, an O(1) number whatever the flight: the centimetre tail of B, D
    and kaon decays sits inside the splines like the core."""
    exp_dxy = _col(t, "gen_expected_dxy_cm", what).astype(np.float64)
    exp_dz = _col(t, "gen_expected_dz_cm", what).astype(np.float64)
    cosh = np.cosh(_col(t, "gen_eta", what).astype(np.float64))
    return {"dxy": IP_SCALE_CM + np.abs(exp_dxy), "dz": IP_SCALE_CM + np.abs(exp_dz),
            "ip3d": IP_SCALE_CM + np.hypot(exp_dxy, exp_dz / cosh),
            "dxy_sign": np.where(exp_dxy < 0, -1.0, 1.0), "dz_sign": np.where(exp_dz < 0, -1.0, 1.0)}


def _prompt_scales(n: int) -> dict[str, np.ndarray]:
    one = np.ones(n)
    return {"dxy": IP_SCALE_CM * one, "dz": IP_SCALE_CM * one, "ip3d": IP_SCALE_CM * one, "dxy_sign": one,
            "dz_sign": one}


def _muon_common(t: Mapping, rng: np.random.Generator, what: str, sc: Mapping, suffix: str) -> dict:
    n = len(_col(t, "reco_pt", what))
    medium = _col(t, "reco_mediumId", what).astype(bool)
    tight = _col(t, "reco_tightId", what).astype(bool)
    return {
        "log_iso": _encode_iso(_col(t, "reco_pfRelIso04_all", what).astype(np.float64), rng),
        "id_ord": medium.astype(np.float64) + (medium & tight) + rng.uniform(size=n),
        f"asinh_dxy{suffix}": np.arcsinh(_col(t, "reco_dxy", what).astype(np.float64) * sc["dxy_sign"] / sc["dxy"]),
        f"asinh_dz{suffix}": np.arcsinh(_col(t, "reco_dz", what).astype(np.float64) * sc["dz_sign"] / sc["dz"]),
        f"asinh_ip3d{suffix}": np.arcsinh(np.abs(_col(t, "reco_ip3d", what).astype(np.float64)) / sc["ip3d"]),
    }


def encode_targets(obj: str, table: Mapping, rng: np.random.Generator) -> np.ndarray:
    """The (n, len(TARGETS[obj])) matrix of matched rows (dequantised with ``rng``)."""
    what = f"FlashSim {obj} targets"
    g = {k: _col(table, f"gen_{k}", what).astype(np.float64) for k in ("pt", "eta", "phi")}
    r = {k: _col(table, f"reco_{k}", what).astype(np.float64) for k in ("pt", "eta", "phi")}
    cols = {
        "log_pt_ratio": np.log(r["pt"] / g["pt"]),
        "deta": r["eta"] - g["eta"],
        "dphi": wrap_phi(r["phi"] - g["phi"]),
    }
    if obj == "jets":
        gm = _col(table, "gen_mass", what).astype(np.float64).clip(0)
        rm = _col(table, "reco_mass", what).astype(np.float64).clip(0)
        cols["log_mass_ratio"] = np.log((rm + 1) / (gm + 1))
        cols.update(_jet_common(table, rng, what))
    else:
        flip = _col(table, "reco_charge", what).astype(np.int64) != _col(table, "gen_charge", what).astype(np.int64)
        cols["charge_flip"] = flip + rng.uniform(size=len(flip))
        cols.update(_muon_common(table, rng, what, ip_scales(table, what), "_rel"))
    return np.column_stack([cols[k] for k in TARGETS[obj]]).astype(np.float32)


def encode_fake_targets(obj: str, table: Mapping, rng: np.random.Generator) -> np.ndarray:
    what = f"FlashSim fake {obj} targets"
    pt = _col(table, "reco_pt", what).astype(np.float64)
    cols = {"log_pt": np.log(pt), "eta": _col(table, "reco_eta", what).astype(np.float64),
            "phi": _col(table, "reco_phi", what).astype(np.float64)}
    if obj == "jets":
        cols["log_mass_over_pt"] = np.log(_col(table, "reco_mass", what).astype(np.float64).clip(1e-3) / pt)
        cols.update(_jet_common(table, rng, what))
    else:
        cols["charge"] = (_col(table, "reco_charge", what) > 0) + rng.uniform(size=len(pt))
        cols.update(_muon_common(table, rng, what, _prompt_scales(len(pt)), ""))
    return np.column_stack([cols[k] for k in FAKE_TARGETS[obj]]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# decoding: model columns -> contract fields
# --------------------------------------------------------------------------------------------
def _decode_jet_common(x: dict, eta: np.ndarray, btag_abs_eta_max: float) -> dict:
    btag = np.where(np.abs(eta) < btag_abs_eta_max, _decode_score(x["logit_btag"]), np.float32(-1.0))
    return {
        "btagDeepFlavB": btag.astype(np.float32),
        "qgl": _decode_score(x["logit_qgl"]),
        "nConstituents": np.floor(np.exp(x["log_nconst"])).clip(1, None).astype(np.int32),
        "jetId": JET_ID_VALUES[np.floor(x["jetid_ord"]).clip(0, 2).astype(np.int64)],
    }


def _decode_muon_common(x: dict, sc: Mapping, suffix: str) -> dict:
    id_ord = np.floor(x["id_ord"]).clip(0, 2)
    return {
        "pfRelIso04_all": _decode_iso(x["log_iso"]),
        "mediumId": id_ord >= 1,
        "tightId": id_ord >= 2,
        "dxy": (np.sinh(x[f"asinh_dxy{suffix}"]) * sc["dxy"] * sc["dxy_sign"]).astype(np.float32),
        "dz": (np.sinh(x[f"asinh_dz{suffix}"]) * sc["dz"] * sc["dz_sign"]).astype(np.float32),
        "ip3d": np.abs(np.sinh(x[f"asinh_ip3d{suffix}"]) * sc["ip3d"]).astype(np.float32),
    }


def decode_targets(obj: str, x: np.ndarray, gen: Mapping, btag_abs_eta_max: float = 2.5) -> dict[str, np.ndarray]:
    """Contract fields (without the gen index) of objects generated from gen rows ``gen``
    (``gen_pt``, ``gen_eta``, ``gen_phi``, and ``gen_mass``/``gen_hadronFlavour`` for jets,
    ``gen_charge``, ``gen_expected_dxy_cm`` and ``gen_expected_dz_cm`` for muons)."""
    x64 = {k: x[:, i].astype(np.float64) for i, k in enumerate(TARGETS[obj])}
    g = {k: np.asarray(v, dtype=np.float64) for k, v in gen.items()}
    out = {
        "pt": (g["gen_pt"] * np.exp(x64["log_pt_ratio"])).astype(np.float32),
        "eta": (g["gen_eta"] + x64["deta"]).astype(np.float32),
        "phi": wrap_phi(g["gen_phi"] + x64["dphi"]).astype(np.float32),
    }
    if obj == "jets":
        m = (g["gen_mass"].clip(0) + 1) * np.exp(x64["log_mass_ratio"]) - 1
        out["mass"] = m.clip(0, None).astype(np.float32)
        out.update(_decode_jet_common(x64, out["eta"], btag_abs_eta_max))
        out["hadronFlavour"] = g["gen_hadronFlavour"].astype(np.int32)
    else:
        out["mass"] = np.full(len(x), MUON_MASS_GEV, dtype=np.float32)
        flip = np.floor(x64["charge_flip"]).clip(0, 1) >= 1
        out["charge"] = np.where(flip, -g["gen_charge"], g["gen_charge"]).astype(np.int32)
        out.update(_decode_muon_common(x64, ip_scales(g, "FlashSim muon decoding"), "_rel"))
    return _contract_order(obj, out)


def decode_fake_targets(obj: str, x: np.ndarray, btag_abs_eta_max: float = 2.5) -> dict[str, np.ndarray]:
    x64 = {k: x[:, i].astype(np.float64) for i, k in enumerate(FAKE_TARGETS[obj])}
    pt = np.exp(x64["log_pt"])
    out = {"pt": pt.astype(np.float32), "eta": x64["eta"].astype(np.float32),
           "phi": wrap_phi(x64["phi"]).astype(np.float32)}
    if obj == "jets":
        out["mass"] = (np.exp(x64["log_mass_over_pt"]) * pt).astype(np.float32)
        out.update(_decode_jet_common(x64, out["eta"], btag_abs_eta_max))
        out["hadronFlavour"] = np.zeros(len(x), dtype=np.int32)  # pileup/noise jets: no hadron
    else:
        out["mass"] = np.full(len(x), MUON_MASS_GEV, dtype=np.float32)
        out["charge"] = np.where(np.floor(x64["charge"]).clip(0, 1) >= 1, 1, -1).astype(np.int32)
        out.update(_decode_muon_common(x64, _prompt_scales(len(x)), ""))
    return _contract_order(obj, out)


def _contract_order(obj: str, out: dict) -> dict[str, np.ndarray]:
    spec, idx = (nanoaod.JET, "genJetIdx") if obj == "jets" else (nanoaod.MUON, "genPartIdx")
    return {f: np.asarray(out[f]).astype(spec[f]) for f in spec if f != idx}
