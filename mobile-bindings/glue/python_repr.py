
# --- FieldCRM glue (mobile-bindings/glue/python_repr.py, appended by
# scripts/bindings.sh): records, values and errors show their fields in
# lists, the REPL and logs too, not only in print().
def _fieldcrm_readable(namespace):
    for value in list(namespace.values()):
        if not isinstance(value, type) or value.__module__ != __name__:
            continue
        for cls in [value] + [v for v in vars(value).values() if isinstance(v, type)]:
            # The generated __str__ shows the fields; the default (or
            # dataclass) __repr__ of these classes does not.
            if getattr(cls.__str__, "__module__", None) == __name__:
                cls.__repr__ = cls.__str__


_fieldcrm_readable(globals())
