"""Drawing: the course's plots (:mod:`.plotting`), ipywidgets explorers (:mod:`.widgets`) and
diagrams of the key ideas (:mod:`.diagrams`).

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "CLIENT_COLOR": "fedlab_utils.viz.diagrams",
    "PHASE_COLORS": "fedlab_utils.viz.diagrams",
    "SERVER_COLOR": "fedlab_utils.viz.diagrams",
    "WIRE_COLOR": "fedlab_utils.viz.diagrams",
    "arrow": "fedlab_utils.viz.diagrams",
    "blank": "fedlab_utils.viz.diagrams",
    "box": "fedlab_utils.viz.diagrams",
    "draw_error_feedback_loop": "fedlab_utils.viz.diagrams",
    "draw_federated_round": "fedlab_utils.viz.diagrams",
    "draw_flower_processes": "fedlab_utils.viz.diagrams",
    "error_feedback_step": "fedlab_utils.viz.diagrams",
    "fmt_bytes": "fedlab_utils.viz.diagrams",
    "new_axes": "fedlab_utils.viz.diagrams",
    "CJK_FAMILY": "fedlab_utils.viz.fonts",
    "FONT_ENV": "fedlab_utils.viz.fonts",
    "cjk_font_active": "fedlab_utils.viz.fonts",
    "cjk_font_path": "fedlab_utils.viz.fonts",
    "figure_text": "fedlab_utils.viz.fonts",
    "register_cjk_font": "fedlab_utils.viz.fonts",
    "use_language_fonts": "fedlab_utils.viz.fonts",
    "COLORS": "fedlab_utils.viz.plotting",
    "integer_ticks": "fedlab_utils.viz.plotting",
    "legend_outside": "fedlab_utils.viz.plotting",
    "plot_accuracy": "fedlab_utils.viz.plotting",
    "plot_accuracy_vs_mb": "fedlab_utils.viz.plotting",
    "plot_energy": "fedlab_utils.viz.plotting",
    "plot_label_heatmap": "fedlab_utils.viz.plotting",
    "plot_sensitivity": "fedlab_utils.viz.plotting",
    "seed_curve": "fedlab_utils.viz.plotting",
    "use_style": "fedlab_utils.viz.plotting",
    "WIDGETS_ENV": "fedlab_utils.viz.widgets",
    "alpha_explorer": "fedlab_utils.viz.widgets",
    "slider_explorer": "fedlab_utils.viz.widgets",
    "static_note": "fedlab_utils.viz.widgets",
    "widgets_enabled": "fedlab_utils.viz.widgets",
}
__all__ = ["CJK_FAMILY", "CLIENT_COLOR", "COLORS", "FONT_ENV", "PHASE_COLORS", "SERVER_COLOR",
           "WIDGETS_ENV", "WIRE_COLOR", "alpha_explorer", "arrow", "blank", "box",
           "cjk_font_active", "cjk_font_path", "draw_error_feedback_loop", "draw_federated_round",
           "draw_flower_processes", "error_feedback_step", "figure_text", "fmt_bytes",
           "integer_ticks", "legend_outside", "new_axes", "plot_accuracy", "plot_accuracy_vs_mb",
           "plot_energy", "plot_label_heatmap", "plot_sensitivity", "register_cjk_font",
           "seed_curve", "slider_explorer", "static_note", "use_language_fonts", "use_style",
           "widgets_enabled"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
