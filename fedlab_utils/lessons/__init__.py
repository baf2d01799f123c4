"""Lesson code: one subpackage or module per technique, beyond the core.

``baseline`` (00), ``pruning`` (01), ``compression`` (02), ``distillation`` (03), ``acceleration`` (04),
``parallel`` (05: pipelines and split learning), ``capstone`` (06), ``deployment`` (07).
"""
