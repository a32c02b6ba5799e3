"""`Registry`: classes selectable by name (phases, proposal rules)."""


class Registry:
    """Maps names to subclasses of `base`, registered by a decorator.

    Args:
        base: type. What every registered class must subclass.
        argument: str. The user-facing argument that names a class, for
            error messages (e.g. `"phases"`).
        reserved: tuple of str. Names a class may not take.
    """

    def __init__(self, base, argument, reserved=()):
        self.base = base
        self.argument = argument
        self.reserved = tuple(reserved)
        self._classes = {}

    def register(self, cls):
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValueError(
                f"`cls` must be a {self.base.__name__} subclass. Received: "
                f"cls={cls!r}"
            )
        name = cls.name
        if not isinstance(name, str) or not name or name in self.reserved:
            raise ValueError(
                f"`{cls.__name__}.name` must be a non-empty str other than "
                f"{list(self.reserved)}. Received: name={name!r}"
            )
        self._classes[str(name)] = cls
        return cls

    def names(self):
        return tuple(self._classes)

    def create(self, name):
        """A new instance of the class registered as `name`."""
        if name not in self._classes:
            raise ValueError(
                f"`{self.argument}` must name one of {list(self._classes)}. "
                f"Received: {self.argument}={name!r}"
            )
        return self._classes[name]()
