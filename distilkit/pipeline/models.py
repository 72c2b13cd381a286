"""Loading the run's models and tokenizers (pruned and int8 folders through distilkit) and building the student."""

from __future__ import annotations

from ..config import DistillationConfig
from ..serialization import compression_record
from .recipe import ModelArguments, RecipeError
from .task_data import TaskData

def _auto_class(task: str):
    import transformers

    return (transformers.AutoModelForCausalLM if task == "causal-lm"
            else transformers.AutoModelForSequenceClassification)


def teacher_tokenizer_if_different(model_args: ModelArguments, student_tokenizer, task: str):
    """The teacher's own tokenizer when the student (a separate model) tokenises differently, else None."""
    if not model_args.student or model_args.tokenizer:
        return None  # a student built from the teacher, or one tokenizer named for both
    try:
        teacher_tokenizer = load_tokenizer(model_args.teacher, task)
    except RecipeError:
        return None  # the teacher folder ships no tokenizer: it is read with the student's
    if teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab():
        return None
    if task != "sequence-classification":
        raise RecipeError(
            f"The teacher ({model_args.teacher}) and the student ({model_args.student}) tokenise differently; "
            f"distilling them needs aligned positions, which {task} does not have. Use a student with the "
            "teacher's tokenizer."
        )
    return teacher_tokenizer


def load_tokenizer(source: str, task: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise RecipeError(f"Could not load a tokenizer from {source!r}: {err}") from err
    if task == "causal-lm" and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need padding; padded positions get no loss
    return tokenizer


def attention_for(model_args: ModelArguments, training: DistillationConfig | None) -> str | None:
    if model_args.attn_implementation:
        return model_args.attn_implementation
    if training is not None and training.attention_weight > 0:
        return "eager"
    return None


def load_model(source: str, task: str, role: str, num_labels: int | None = None,
               label_names: list[str] | None = None, attn_implementation: str | None = None,
               new_head: bool = False):
    """A model with the task's head from a folder or Hub id; pruned or int8 folders go through distilkit.

    `new_head`: the classifier is to be trained (`train`), so a saved head of another size is replaced by a fresh
    one instead of being an error.
    """
    from ..serialization import from_pretrained, load_config

    try:
        config = load_config(source)
        if compression_record(config):
            model = from_pretrained(source)
        else:
            kwargs = {}
            if num_labels is not None and task != "causal-lm":
                names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
                kwargs.update(num_labels=num_labels, id2label=dict(enumerate(names)),
                              label2id={name: i for i, name in enumerate(names)})
                if new_head:
                    kwargs["ignore_mismatched_sizes"] = True
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            model = _auto_class(task).from_pretrained(source, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise RecipeError(f"Could not load the {role} from {source!r} as a {task} model: {err}") from err
    if attn_implementation and getattr(model.config, "_attn_implementation", None) != attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model


def check_num_labels(model, data: TaskData, role: str) -> None:
    if data.num_labels is not None and getattr(model.config, "num_labels", None) not in (None, data.num_labels):
        raise RecipeError(
            f"The {role} has {model.config.num_labels} labels but the data has {data.num_labels}; use a {role} "
            "fine-tuned on this task (distilkit train), or set num_labels."
        )


def build_student(model_args: ModelArguments, teacher, task: str, training: DistillationConfig | None):
    from ..student import student_from_teacher

    if model_args.student:
        return load_model(model_args.student, task, "student", attn_implementation=attention_for(model_args, training))
    if model_args.keep_layers is None:
        raise RecipeError("No student: set model.student (a folder or Hub id) or model.student_layers (build it "
                          "from the teacher by keeping that many of its layers).")
    try:
        return student_from_teacher(teacher, model_args.keep_layers)
    except ValueError as err:
        raise RecipeError(f"model.student_layers={model_args.student_layers!r}: {err}") from err
