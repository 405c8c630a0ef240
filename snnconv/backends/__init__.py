"""Optional fast backends for the closed-form simulator.

They compile an SNN (as read from its model file, never from the original ONNX) into another
runtime's graph. ``snnconv.snn.simulate`` stays the reference: verify and the tests compare the
backends against it.
"""
