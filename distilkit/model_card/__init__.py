"""distilkit's model card: what it states (`CardFacts`, the results table of `ModelRow`s, the recipe), rendered
from the packaged template into README.md. The Hub upload is distilkit.hub.

    card = render_model_card("out", teacher_hub_id="org/teacher", rows=[...], recipe=recipe_from_config(args))
    card.save("out/README.md")                      # or write_model_card("out", ...)

`DistillationTrainer.create_model_card` (and so `push_to_hub`) describes its run as a `TrainingRun` and writes
`trainer_model_card(run, ...)` on the main process only.
"""

from .facts import CardFacts, hub_id, teacher_hub_id, teacher_name
from .recipe import recipe_from_config
from .render import CARD_FILE, card_template_path, render_card, render_model_card, save_card, write_model_card
from .table import ModelRow, measure_model
from .training import TrainingRun, trainer_model_card

__all__ = ["CARD_FILE", "CardFacts", "ModelRow", "TrainingRun", "card_template_path", "hub_id", "measure_model",
           "recipe_from_config", "render_card", "render_model_card", "save_card", "teacher_hub_id", "teacher_name",
           "trainer_model_card", "write_model_card"]
