"""Lesson 05, model parallelism: pipelines (:mod:`.pipeline`, with the worker process it starts,
:mod:`.worker`) and split learning (:mod:`.split_learning`).

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "MultiProcessResult": "fedlab_utils.lessons.parallel.pipeline",
    "PipelineReport": "fedlab_utils.lessons.parallel.pipeline",
    "RELATIONS_05": "fedlab_utils.lessons.parallel.pipeline",
    "RULES_05": "fedlab_utils.lessons.parallel.pipeline",
    "StagedModel": "fedlab_utils.lessons.parallel.pipeline",
    "article_large_net": "fedlab_utils.lessons.parallel.pipeline",
    "gpipe_makespan": "fedlab_utils.lessons.parallel.pipeline",
    "gpipe_schedule": "fedlab_utils.lessons.parallel.pipeline",
    "ideal_bubble": "fedlab_utils.lessons.parallel.pipeline",
    "pipeline_train_step": "fedlab_utils.lessons.parallel.pipeline",
    "plot_bubble_sweep": "fedlab_utils.lessons.parallel.pipeline",
    "plot_energy_by_profile": "fedlab_utils.lessons.parallel.pipeline",
    "plot_schedule": "fedlab_utils.lessons.parallel.pipeline",
    "radio_awake_joules": "fedlab_utils.lessons.parallel.pipeline",
    "reference_step": "fedlab_utils.lessons.parallel.pipeline",
    "run_multiprocess_pipeline": "fedlab_utils.lessons.parallel.pipeline",
    "split_sequential": "fedlab_utils.lessons.parallel.pipeline",
    "stage_boundaries": "fedlab_utils.lessons.parallel.pipeline",
    "stage_input_shapes": "fedlab_utils.lessons.parallel.pipeline",
    "timed_pipeline_step": "fedlab_utils.lessons.parallel.pipeline",
    "CutInfo": "fedlab_utils.lessons.parallel.split_learning",
    "SplitFed": "fedlab_utils.lessons.parallel.split_learning",
    "bytes_vs_local_size": "fedlab_utils.lessons.parallel.split_learning",
    "client_training_flops_per_sample": "fedlab_utils.lessons.parallel.split_learning",
    "cut_payloads": "fedlab_utils.lessons.parallel.split_learning",
    "cut_profile": "fedlab_utils.lessons.parallel.split_learning",
    "draw_split_cut": "fedlab_utils.lessons.parallel.split_learning",
    "split_at": "fedlab_utils.lessons.parallel.split_learning",
    "split_step": "fedlab_utils.lessons.parallel.split_learning",
    "splitfed_run": "fedlab_utils.lessons.parallel.split_learning",
}
__all__ = ["CutInfo", "MultiProcessResult", "PipelineReport", "RELATIONS_05", "RULES_05",
           "SplitFed", "StagedModel", "article_large_net", "bytes_vs_local_size",
           "client_training_flops_per_sample", "cut_payloads", "cut_profile", "draw_split_cut",
           "gpipe_makespan", "gpipe_schedule", "ideal_bubble", "pipeline_train_step",
           "plot_bubble_sweep", "plot_energy_by_profile", "plot_schedule", "radio_awake_joules",
           "reference_step", "run_multiprocess_pipeline", "split_at", "split_sequential",
           "split_step", "splitfed_run", "stage_boundaries", "stage_input_shapes",
           "timed_pipeline_step"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
