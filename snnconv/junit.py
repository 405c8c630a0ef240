"""JUnit XML for CI systems: one test case per check of a verify report."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def verify_junit(rep) -> bytes:
    cases: list[tuple[str, str | None, str]] = []
    tol = rep.tolerances.get("mapping_rtol64")
    cases.append(("mapping exactness (float64)",
                  None if rep.mapping_err_max <= tol else
                  f"max rel err {rep.mapping_err_max:.3g} > {tol:g}",
                  f"max rel err {rep.mapping_err_max:.3g}"))
    cases.append(("onnxruntime (float32 bound)",
                  None if rep.ort_bound_ratio_max <= 1 else
                  f"{rep.ort_bound_ratio_max:.3g} x the float32 bound",
                  f"max rel err {rep.ort_err_max:.3g}, {rep.ort_bound_ratio_max:.3g} x bound"))
    if rep.reference64_err_max is not None:
        bad = rep.reference64_err_max > tol and not rep.allow_clipping
        cases.append(("onnx.reference float64",
                      f"max rel err {rep.reference64_err_max:.3g}" if bad else None,
                      f"{rep.reference64_samples} samples, max rel err "
                      f"{rep.reference64_err_max:.3g}"))
    cases.append(("top-1 agreement", f"{rep.disagreements} disagreements" if rep.disagreements
                  else None, f"{rep.top1_agreement:.4%} ({rep.near_ties} near-ties)"))
    for c in rep.layers:
        msg = []
        if c.clipped and not rep.allow_clipping:
            msg.append(f"{c.clipped} clipped")
        if c.kind not in ("input", "readout") and c.err_rel64 > tol:
            msg.append(f"rel err {c.err_rel64:.3g}")
        cases.append((f"layer {c.name}", "; ".join(msg) or None,
                      f"rel err {c.err_rel64:.3g}, clipped {c.clipped}, spikes/neuron "
                      f"{c.spikes_per_neuron:.3f}"))
    return _suite("snnconv verify", rep.model, cases)


def _suite(title: str, model: str, cases: list[tuple[str, str | None, str]]) -> bytes:
    suite = ET.Element("testsuite", name=title, tests=str(len(cases)),
                       failures=str(sum(1 for _, f, _ in cases if f)))
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="model", value=model)
    for name, fail, out in cases:
        tc = ET.SubElement(suite, "testcase", classname="snnconv.verify", name=name)
        if fail:
            ET.SubElement(tc, "failure", message=fail).text = fail
        ET.SubElement(tc, "system-out").text = out
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def integer_junit(d: dict) -> bytes:
    """JUnit XML of an integer verify (golden model vs register-level simulator)."""
    cases = [("logits (golden vs register-level)",
              f"{d['logit_mismatches']} samples differ" if d["logit_mismatches"] else None,
              f"{d['samples']} samples")]
    for name, k in sorted(d["layer_mismatches"].items()):
        cases.append((f"layer {name} spike ticks", f"{k} samples differ", ""))
    cases.append(("register overflow", None, f"{d['overflow_total']} overflow events"))
    return _suite("snnconv verify (integer)", d["model"], cases)
