"""MODEL_CARD.md, generated from model.json only (so the card never says what the package does not)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _data_section(provenance: Mapping[str, Any]) -> list[str]:
    data = provenance.get("training_data") or []
    lines = ["## Training data", ""]
    if not data:
        return [*lines, "Not recorded in the checkpoint.", ""]
    lines += _table(["data set", "licence", "cases"],
                    [[d.get("name"), d.get("licence", "unknown"), d.get("cases")] for d in data])
    return [*lines, ""]


def _metrics_section(metrics: list[Mapping[str, Any]]) -> list[str]:
    lines = ["## Metrics", ""]
    if not metrics:
        return [*lines, "No evaluation was recorded with this model; measure it on your own data before use.", ""]
    lines += _table(["measured on", "cases", "DSC", "NSD", "NSD tolerance (mm)", "HD95 (mm)"],
                    [[m.get("data"), m.get("cases"), m.get("dsc"), m.get("nsd"), m.get("nsd_tolerance_mm"),
                      m.get("hd95_mm")] for m in metrics])
    return [*lines, ""]


def _network_section(meta: Mapping[str, Any]) -> list[str]:
    net, onnx, parity = meta.get("network", {}), meta.get("onnx", {}), meta.get("parity") or {}
    rows = [
        ["family", net.get("family")], ["levels", net.get("levels")], ["truncated at level", net.get("truncated_at")],
        ["parameters", net.get("parameters")], ["multiply-accumulates per window", net.get("macs_per_window")],
        ["file size (bytes)", net.get("file_bytes")], ["CPU latency per window (s, ORT, 2 threads)",
                                                       net.get("cpu_seconds_per_window")],
        ["ONNX opset / exporter / precision",
         f"{onnx.get('opset')} / {onnx.get('exporter')} / {onnx.get('precision')}"],
        ["parity: max abs logit difference", parity.get("max_abs_logit_diff")],
        ["parity: label agreement", parity.get("label_agreement")], ["parity inputs", parity.get("inputs")],
    ]
    if parity.get("measured") is False:
        rows.append(["parity", f"not measured: {parity.get('reason')}"])
    return ["## Network", "", *_table(["", ""], rows), ""]


def _truncation_lines(truncation: Mapping[str, Any] | None) -> list[str]:
    if not truncation:
        return []
    return [f"Truncated (seed 003): encoder levels 0..{int(truncation['cutoff']) - 1} of "
            f"{truncation.get('source_levels')} kept from {truncation.get('source_checkpoint')}; shortened decoder: "
            f"{truncation.get('decoder')}.", ""]


def _data_limits(meta: Mapping[str, Any]) -> list[str]:
    """What the training data could not teach the model, in plain words."""
    data = (meta.get("provenance") or {}).get("training_data") or []

    def synthetic(d: Mapping[str, Any]) -> bool:
        return "phantom" in str(d.get("name", "")).lower() or "synthetic" in str(d.get("licence", "")).lower()

    lines = []
    if data and all(synthetic(d) for d in data):
        lines.append("- Trained on synthetic phantoms only: its accuracy on real CT is what the metrics above say "
                     "and nothing more.")
    if meta.get("task") == "infection":
        lesions_synthesised = not data or any("synth" in str(d.get("name", "")).lower() for d in data)
        lines.append("- No real labelled 3-D COVID-19 CT was used to train or test it: lesions were synthesised "
                     "(real lesion shapes, simulated textures) into real and synthetic lungs." if lesions_synthesised
                     else "- Check which real COVID-19 CT, if any, was in the training data above.")
    return lines


def _mirror_sentence(inp: Mapping[str, Any]) -> str:
    axes = inp.get("mirror_axes")
    if axes is None:
        return ""
    names = ", ".join("zyx"[int(a)] for a in axes)
    return (f" `--tta` mirrors along {names} (the axes its training mirrored)." if names
            else " Trained without mirroring: `--tta` leaves this model as it is.")


def _operating_point_lines(meta: Mapping[str, Any]) -> list[str]:
    output, how = meta.get("output") or {}, (meta.get("provenance") or {}).get("operating_point")
    if output.get("threshold") is None:
        return []
    line = f"Output: class 1 where its probability exceeds **{output['threshold']}** (not argmax at 0.5)."
    if meta.get("task") == "infection":
        line += " `covseg infer --infection-threshold` overrides it."
    if how:
        line += f" Chosen {how.get('chosen_on')}; weights as in {how.get('weights_of')}."
    return ["## Operating point", "", line, ""]


def render_model_card(meta: Mapping[str, Any]) -> str:
    """Markdown card: intended use, data and licences, strategy, metrics, limits."""
    inp, prov = meta.get("input", {}), meta.get("provenance", {})
    groups = (meta.get("output") or {}).get("class_groups") or {}
    classes = ", ".join(f"{k} {' + '.join(groups[k]) if k in groups else v}"
                        for k, v in sorted(meta.get("classes", {}).items(), key=lambda kv: int(kv[0])))
    if groups:
        classes += " (a grouped class is split after segmentation: infection by HU, lungs by side)"
    lines = [
        f"# {meta.get('name')} {meta.get('version')}", "",
        f"Task: **{meta.get('task')}**. Classes: {classes}.", "",
        f"**Licence: {meta.get('licence')}.**", "",
        "## Intended use", "",
        "Research on segmentation and quantification of COVID-19 lung infection, lungs and liver in chest CT. "
        "This is research software, **not a medical device**: it must not be used for diagnosis, treatment or "
        "any clinical decision.", "",
        "## Input", "",
        f"{inp.get('channels')} channel(s) of CT resampled to {inp.get('spacing_mm')} mm (x, y, z), cropped to "
        f"'{inp.get('crop')}', normalised as {inp.get('normalization')}; windows of {inp.get('patch')} voxels "
        f"(z, y, x); valid window sizes are multiples of {inp.get('divisor')}.{_mirror_sentence(inp)}", "",
        *_operating_point_lines(meta),
        *_data_section(prov),
        "## Training", "",
        f"Strategy: {prov.get('strategy')}; pre-trained from: {prov.get('pretrained_from') or 'none'}; "
        f"epochs: {prov.get('epochs')}; trained on: {prov.get('trained_on')}; covseg {prov.get('covseg_version')}.",
        "",
        *_truncation_lines(prov.get("truncation")),
        *_metrics_section(list(meta.get("metrics") or [])),
        *_network_section(meta),
        "## Limits", "",
        "- Validated only where the metrics above say; performance on other scanners, protocols, contrast phases, "
        "paediatric patients or other diseases is unknown.",
        *_data_limits(meta),
        "- Infection is split into ground glass and consolidation by HU after segmentation, not by the network.",
        "- Outputs need review by a qualified reader; volumes depend on the resampling spacing above.",
        "",
    ]
    return "\n".join(lines)
