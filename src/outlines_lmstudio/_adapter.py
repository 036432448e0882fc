"""The type adapter: Outlines inputs and output types -> LM Studio request parts."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import msgspec
from outlines.models.base import ModelTypeAdapter

from ._config import check_flag, is_unknown_name, unknown_setting
from ._inputs import ChatPrompt, format_input, format_text
from ._output import OutputPlan, plan_output
from .errors import InvalidInferenceArgumentError

__all__ = ["LMStudioTypeAdapter"]


class LMStudioTypeAdapter(ModelTypeAdapter):
    """Convert Outlines inputs and output types for LM Studio, without any I/O.

    ``format_input`` dispatches on the input type (a ``functools.singledispatch``
    function, `outlines_lmstudio._inputs.format_input`, that other input types
    can be registered on). ``format_output_type`` returns the structured setting
    sent as ``response_format``.

    Parameters
    ----------
    grammar
        Grammar mode: send Outlines DSL terms (``Regex``, ``CFG``...) as GBNF grammars.
    strict_schema
        Also refuse JSON-schema keywords LM Studio's engines accept but do not enforce.

    Raises
    ------
    InvalidInferenceArgumentError
        (a ``TypeError``) If ``grammar`` or ``strict_schema`` is not a bool, given here or
        assigned later (``model.type_adapter.grammar = True``).
    UnknownSettingError
        On assigning any other public name (``adapter.strict_schma = True``).
    """

    if not TYPE_CHECKING:  # type checkers then check assignments against the settings

        def __setattr__(self, name: str, value: object) -> None:
            # Found by a probe: the model's settings were checked on assignment, its
            # adapter's were not, though the model's error sends users here: `grammar =
            # "no"` turned grammar mode on and a misspelt setting was stored and did nothing.
            if name in _SETTINGS:
                value = check_flag(name, value)
            elif is_unknown_name(self, name):
                raise unknown_setting(self, name, " and ".join(_SETTINGS), _SETTINGS)
            super().__setattr__(name, value)

        def __delattr__(self, name: str) -> None:
            # Found by a review: `del adapter.grammar` made the next call fail on our own
            # AttributeError; as the model's settings, they are set back, not deleted.
            if name in _SETTINGS:
                raise InvalidInferenceArgumentError(
                    f"{type(self).__name__}.{name} cannot be deleted: assign it instead "
                    "(False: off)."
                )
            super().__delattr__(name)

    grammar: bool
    strict_schema: bool

    def __init__(self, *, grammar: bool = False, strict_schema: bool = False) -> None:
        self.grammar = grammar
        self.strict_schema = strict_schema

    def format_input(self, model_input: Any) -> ChatPrompt:
        """Convert a model input into a prompt whose images are ready to upload.

        Parameters
        ----------
        model_input
            A str, a list ``[prompt, Image, ...]``, an ``outlines.inputs.Chat`` or
            an ``lmstudio.Chat``.

        Returns
        -------
        ChatPrompt
            Messages with normalised images (not yet uploaded).
        """
        if type(model_input) is str:  # most calls: no dispatch through a weak-keyed cache
            return format_text(model_input)
        return format_input(model_input)

    def format_output_type(self, output_type: Any = None) -> dict[str, Any] | None:
        """Return the ``response_format`` for an output type (``None`` for free text).

        Parameters
        ----------
        output_type
            The output type given to the model.

        Returns
        -------
        dict | None
            ``{"type": "json", "jsonSchema": ...}``, or ``None`` for plain text.
        """
        # A copy: the plan is kept for later calls, which a caller's change to the dict
        # would change too (found by a review).
        return copy.deepcopy(self._kept_plan(output_type).response_format)

    def plan_output(self, output_type: Any = None) -> OutputPlan:
        """Return the full `OutputPlan` for an output type.

        Parameters
        ----------
        output_type
            The output type given to the model.

        Returns
        -------
        OutputPlan
            What to send and how to render the reply: a copy of the plan the model keeps
            for the type, so that changing its dicts changes no call (found by a probe:
            deleting a property from ``.response_format`` weakened every later call).
        """
        plan = self._kept_plan(output_type)
        return msgspec.structs.replace(
            plan,
            response_format=copy.deepcopy(plan.response_format),
            full_schema=copy.deepcopy(plan.full_schema),
        )

    def _kept_plan(self, output_type: Any = None) -> OutputPlan:
        """Return the plan kept for an output type: the model's own, never to be changed."""
        return plan_output(output_type, grammar=self.grammar, strict_schema=self.strict_schema)


_SETTINGS = ("grammar", "strict_schema")
"""The adapter's settings: on/off flags, checked on every assignment."""
