"""One schema for every setting: each one declared once, as a field of its dataclass.

A setting's declaration says everything about it, in its type::

    shifts: Annotated[int, Meta(ge=0, le=20), Setting(flag="--shifts", help="...")] = 0

- the type, its range (msgspec's :class:`~msgspec.Meta`) or its choices (a ``Literal``),
  and ``| None`` where it may be left out: msgspec checks these;
- the default, as the dataclass declares it;
- :class:`Setting`: what people read: the command-line flag and its help, and what an
  error adds to the allowed values (a unit, a note). The allowed values themselves are
  said from the type (``a whole number from 0 to 20``), so a range is written once.

Everything else follows from that declaration, so the rules live in one place:

- :func:`check`, called by every settings class's ``__post_init__``: whatever built the
  object (flags, a config file, a job spec, code, :func:`dataclasses.replace`), its values
  are checked, whole numbers become floats where floats are declared and lists become
  tuples, so equal settings compare, serialise and hash equal;
- :func:`build`: an object from a table someone wrote (TOML, JSON), unknown keys refused
  by name, each value checked where it stands, tables nested in tables read in turn;
- :func:`fields`: the declarations, from which the command line makes its flags.

Every refusal is one message naming the place, the value and what to use instead:
``[separation] shifts = 21 is not allowed; use a whole number from 0 to 20 (...)``.

msgspec was chosen by measurement (README, Development): it adds about 7 ms to the host
commands' start (pydantic about 43 ms, cattrs about 11 ms), is strict about types, and
checks a whole settings object in about a microsecond.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec

from bridge.errors import SettingsError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

# Where @settings keeps a class's fields, read once when the class is made.
_FIELDS = "__stembridge_fields__"
_SHOWN = 80


class Setting(NamedTuple):
    """What people read about one setting; its rule is the type it annotates.

    Attributes:
        flag: The command-line flag, or ``None``. For a true/false setting the flag says
            what it sets: ``--no-pictures`` false, any other true.
        negatable: A true/false flag that also has its ``--no-`` form (``--exact-sum``).
        repeat: The flag may be given more than once: once gives the value, more a list.
        metavar: The flag's placeholder in ``--help``.
        help: The flag's help; the allowed values and the default are added to it.
        unit: Said after a number's range: ``Hz``, ``seconds``, ``LUFS``.
        note: Said after the allowed values, in brackets: ``-1 is usual``.
        left_out: What leaving an optional setting out means: ``for the model's own``.
        allowed: Says the allowed values instead of the words the type gives (for a
            pattern, or a value that ``parse`` reads).
        example: Shown in the error when a required key is missing.
        text: Reads a string given where the type wants something else (a comma list).
        read: The type a document gives when the field holds what ``parse`` makes of it.
        parse: Makes the field's value from the document's (a path, a URL); it raises
            :class:`~bridge.errors.SettingsError` with its own message.
    """

    flag: str | None = None
    negatable: bool = False
    repeat: bool = False
    metavar: str | None = None
    help: str = ""
    unit: str = ""
    note: str = ""
    left_out: str = ""
    allowed: str = ""
    example: str = ""
    text: Callable[[str], Any] | None = None
    read: Any = None
    parse: Callable[[Any], Any] | None = None


class Where(NamedTuple):
    """Where a table sits in its document, as a message names it.

    Attributes:
        table: ``[separation]`` or ``[[rule]] 'mixes'`` (a TOML table: its keys follow a
            space), ``separation`` or ``stems.vocals.chain[1]`` with ``dotted`` (a JSON
            object or a place in a preset: its keys follow a dot), or empty for the
            document itself.
        dotted: Join keys with a dot.
    """

    table: str = ""
    dotted: bool = False

    def key(self, name: str) -> str:
        """The place of one key of this table."""
        if not self.table:
            return name
        return f"{self.table}.{name}" if self.dotted else f"{self.table} {name}"

    def child(self, name: str) -> Where:
        """The table that one key of this table holds."""
        return Where(self.key(name), dotted=True)

    @property
    def label(self) -> str:
        """What starts a message about this table as a whole."""
        if not self.table:
            return ""
        return f"{self.table}: " if self.dotted else f"{self.table} "

    def refuse(self, exc: SettingsError) -> SettingsError:
        """``exc`` with this table named in front of its message."""
        return SettingsError(f"{self.label}{exc}", key=exc.key, value=exc.value)


class Kind:
    """One declared type: what it allows, checked and said.

    Args:
        declared: The type as declared: ``Annotated[float, Meta(ge=1, le=30)]``,
            optionally ``| None``, with a :class:`Setting` among its metadata.
    """

    def __init__(self, declared: Any) -> None:
        self.declared = declared
        inner, self.optional = _without_none(declared)
        self.base, self.meta, setting = _unannotated(inner)
        #: Whether documents give it: a field without a Setting comes from code only.
        self.described = setting is not None
        self.setting = setting or _NO_SETTING
        self.nested = dataclasses.is_dataclass(self.base) and hasattr(self.base, _FIELDS)

    @functools.cached_property
    def _holder(self) -> Any:
        # msgspec keeps what it learns about a Struct type, not about a bare type: checking
        # through a one-field Struct is some twenty times faster than converting to the
        # type. Made when first needed: most are needed only to name a refused value.
        return msgspec.defstruct("Value", [("value", self.declared)])

    @functools.cached_property
    def _read_holder(self) -> Any:
        return msgspec.defstruct("Value", [("value", self.setting.read)])

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The values a ``Literal`` allows, in their order."""
        return typing.get_args(self.base) if typing.get_origin(self.base) is Literal else None

    @property
    def allowed(self) -> str:
        """The allowed values as a person reads them: ``a number from 1 to 30 LUFS``."""
        setting = self.setting
        words = setting.allowed or _describe(self.base, self.meta, setting.unit)
        if setting.note:
            words += f" ({setting.note})"
        if self.optional:
            words += ", or leave it out" + (f" {setting.left_out}" if setting.left_out else "")
        return words

    def check(self, value: Any, *, place: str, key: str | None = None) -> Any:
        """``value`` as this type holds it (``1`` becomes ``1.0`` for a float).

        Raises:
            SettingsError: The value is not allowed; ``key`` (default ``place``) and the
                value are its attributes.
        """
        try:
            checked = msgspec.convert({"value": value}, self._holder).value
        except msgspec.ValidationError:
            raise self.refused(value, place=place, key=key) from None
        return self.finite(checked, value, place=place, key=key)

    def finite(self, checked: Any, value: Any, *, place: str, key: str | None) -> Any:
        """``checked``, unless it is NaN or infinite: "a number" is a finite one (a
        one-sided range alone would let infinity in, and NaN compares false)."""
        if isinstance(checked, float) and not math.isfinite(checked):
            raise self.refused(value, place=place, key=key)
        return checked

    def read(self, value: Any, where: Where, name: str) -> Any:
        """``value`` as a document gave it for key ``name`` of table ``where``: read as a
        table of its own, parsed, or as it is (the object built from it checks it)."""
        place = where.key(name)
        if self.nested:
            if not isinstance(value, dict):
                raise self.refused(value, place=place, key=name)
            return build(self.base, value, where.child(name))
        if self.setting.text is not None and isinstance(value, str):
            value = self.setting.text(value)
        if self.setting.parse is None:
            return value
        try:
            raw = msgspec.convert({"value": value}, self._read_holder).value
        except msgspec.ValidationError:
            raise self.refused(value, place=place, key=name) from None
        try:
            return self.setting.parse(raw)
        except SettingsError as exc:
            raise where.refuse(exc) from exc

    def refused(self, value: Any, *, place: str, key: str | None = None) -> SettingsError:
        """The error for a value this type does not allow."""
        return refusal(place, value, self.allowed, key=key)


class Field(NamedTuple):
    """One setting of a class, as declared.

    Attributes:
        name: The key, in documents and in code.
        kind: Its type.
        declaration: The dataclass field (default and default factory).
    """

    name: str
    kind: Kind
    declaration: dataclasses.Field[Any]

    @property
    def setting(self) -> Setting:
        return self.kind.setting

    @property
    def required(self) -> bool:
        """Whether a document must give it (no default)."""
        return (
            self.declaration.default is dataclasses.MISSING
            and self.declaration.default_factory is dataclasses.MISSING
        )

    @property
    def default(self) -> Any:
        """The value when none is given (``None`` for a required one)."""
        if self.declaration.default_factory is not dataclasses.MISSING:
            return self.declaration.default_factory()
        return None if self.required else self.declaration.default

    @property
    def is_key(self) -> bool:
        """Whether documents give it (it has a :class:`Setting`); others come from code."""
        return self.kind.described


class _Table(NamedTuple):
    """A class's settings, and a Struct with one field each, to check them all at once."""

    fields: tuple[Field, ...]
    whole: type[msgspec.Struct]


def settings(kind: type[T]) -> type[T]:
    """Read the declarations of a dataclass once, for :func:`check`, :func:`build` and
    :func:`fields`; put it above ``@dataclass``."""
    # Annotations are taken as written unless `from __future__ import annotations` made
    # them strings, which cost an evaluation each.
    declared = {f.name: f.type for f in dataclasses.fields(kind)}
    if any(isinstance(hint, str) for hint in declared.values()):
        declared = typing.get_type_hints(kind, include_extras=True)
    found = tuple(
        Field(f.name, Kind(declared[f.name]), f) for f in dataclasses.fields(kind) if f.init
    )
    whole = msgspec.defstruct(
        kind.__name__, [(field.name, field.kind.declared) for field in found], kw_only=True
    )
    setattr(kind, _FIELDS, _Table(found, whole))
    return kind


def fields(kind: type[DataclassInstance]) -> tuple[Field, ...]:
    """The declared settings of a class made with :func:`settings`, in declaration order."""
    return _table(kind).fields


def _table(kind: type[DataclassInstance]) -> _Table:
    table: _Table | None = vars(kind).get(_FIELDS)
    if table is None:
        raise TypeError(f"{kind.__name__} is not declared with @schema.settings")
    return table


def keys(kind: type[DataclassInstance]) -> tuple[str, ...]:
    """The keys a document may give for ``kind``."""
    return tuple(field.name for field in fields(kind) if field.is_key)


def check(obj: DataclassInstance) -> None:
    """Check every field of ``obj`` against its declaration, in place (see the module
    docstring); settings classes call it first in ``__post_init__``.

    Raises:
        SettingsError: Naming the first field whose value is not allowed.
    """
    table = _table(type(obj))
    values = {field.name: getattr(obj, field.name) for field in table.fields}
    try:
        whole = msgspec.convert(values, table.whole)
    except msgspec.ValidationError:
        whole = None  # then field by field (slower), to name the one not allowed
    for field in table.fields:
        value = values[field.name]
        if whole is None:
            checked = field.kind.check(value, place=field.name, key=field.name)
        else:
            checked = field.kind.finite(
                getattr(whole, field.name), value, place=field.name, key=field.name
            )
        if checked is not value:
            # Frozen: the one place a value is replaced, by its own normal form.
            object.__setattr__(obj, field.name, checked)


def build(
    kind: type[T],
    values: Mapping[str, Any],
    where: Where | None = None,
    *,
    base: T | None = None,
    extra: Mapping[str, Any] | None = None,
) -> T:
    """A ``kind`` from a table someone wrote.

    Args:
        kind: A class declared with :func:`settings`.
        values: The table as parsed (TOML or JSON).
        where: Where the table is, for messages.
        base: The object whose values stand where the table says nothing (the table
            wins); default: the declared defaults.
        extra: Values of fields that documents do not give, from code.

    Raises:
        SettingsError: An unknown or missing key, a value not allowed, or settings that
            do not go together; the message names the place.
    """
    where = where or Where()
    declared = {field.name: field for field in fields(kind) if field.is_key}
    for key, value in values.items():
        if key not in declared:
            raise unknown_key(where, key, value, ", ".join(declared))
    for field in declared.values():
        if field.required and field.name not in values:
            fix = f"; add {field.name} = {field.setting.example}" if field.setting.example else ""
            raise SettingsError(f"{where.label}missing key {field.name!r}{fix}", key=field.name)
    given = {key: declared[key].kind.read(value, where, key) for key, value in values.items()}
    try:
        if base is not None:
            return dataclasses.replace(base, **given)
        return kind(**given, **(extra or {}))
    except SettingsError as exc:
        # The object checks its values at once (fast); one by one (slower) only to name
        # a refused one by its place in this table. Otherwise it is a rule between
        # settings, or one of a nested table, which names its own place.
        for key, value in given.items():
            if not declared[key].kind.nested and declared[key].setting.parse is None:
                declared[key].kind.check(value, place=where.key(key), key=key)
        raise where.refuse(exc) from exc


def refusal(place: str, value: Any, allowed: str, *, key: str | None = None) -> SettingsError:
    """The error for a value not allowed at ``place`` (``key``: its attribute, default
    ``place``): ``place = value is not allowed; use allowed``."""
    return SettingsError(
        f"{place} = {shown(value)} is not allowed; use {allowed}",
        key=place if key is None else key,
        value=value,
    )


def unknown_key(where: Where, key: str, value: Any, allowed: str) -> SettingsError:
    """The error for a key a table may not have."""
    return SettingsError(
        f"{where.label}unknown key {shown(key)}; allowed keys are {allowed}", key=key, value=value
    )


def shown(value: Any) -> str:
    """``repr(value)``, cut short when long (a message quotes what it refuses)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


_NO_SETTING = Setting()


def _without_none(declared: Any) -> tuple[Any, bool]:
    if typing.get_origin(declared) in (types.UnionType, typing.Union):
        args = typing.get_args(declared)
        rest = tuple(arg for arg in args if arg is not type(None))
        if len(rest) == 1 and len(rest) < len(args):
            return rest[0], True
    return declared, False


def _unannotated(inner: Any) -> tuple[Any, msgspec.Meta | None, Setting | None]:
    if typing.get_origin(inner) is not Annotated:
        return inner, None, None
    base, *metadata = typing.get_args(inner)
    meta = next((m for m in metadata if isinstance(m, msgspec.Meta)), None)
    setting = None
    for found in (m for m in metadata if isinstance(m, Setting)):
        # An alias's Setting (a unit, a note) with the field's own (its flag) on top.
        defaults = Setting._field_defaults
        changes = {name: getattr(found, name) for name in Setting._fields}
        changes = {name: value for name, value in changes.items() if value != defaults[name]}
        setting = (setting or Setting())._replace(**changes)
    return base, meta, setting


def _describe(base: Any, meta: msgspec.Meta | None, unit: str) -> str:
    origin = typing.get_origin(base)
    if base is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(str(choice) for choice in typing.get_args(base))
    if base in (int, float):
        return _numbers("a whole number" if base is int else "a number", meta, unit, base)
    if base is str:
        return "a non-empty string" if meta is not None and meta.min_length else "a string"
    if origin is tuple:
        return "a list of strings" if typing.get_args(base)[0] is str else "a list"
    if base is dict or origin is dict or dataclasses.is_dataclass(base):
        return "a table (an object in JSON)"
    return f"a {getattr(base, '__name__', base)}"


def _numbers(word: str, meta: msgspec.Meta | None, unit: str, base: type) -> str:
    def number(value: float) -> str:
        return str(int(value)) if base is int else f"{value:g}"

    after = f" {unit}" if unit else ""
    if meta is None:
        return word + (f" of {unit}" if unit else "")
    low, high = meta.ge, meta.le
    if low is not None and high is not None:
        return f"{word} from {number(low)} to {number(high)}{after}"
    limits = []
    if meta.gt is not None:
        limits.append(f"above {number(meta.gt)}")
    if meta.lt is not None:
        limits.append(f"below {number(meta.lt)}")
    if high is not None:
        limits.append(f"at most {number(high)}")
    if low is not None:  # "a number, 0 or more seconds"
        return f"{word}, {' and '.join([f'{number(low)} or more', *limits])}{after}"
    return f"{word} {' and '.join(limits)}{after}"
