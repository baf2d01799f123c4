"""Lesson code: one subpackage or module per technique, beyond the core.

``pruning`` (01), ``quantization`` (02), ``distillation`` (03), ``acceleration`` (04),
``parallel`` (05: pipelines and split learning), ``capstone`` (06), ``deployment`` (07).
"""
