"""Plain functions for the process pool whose pickling the parent can count.

A plain function pickles by reference: ``pickle`` looks its name up on its
module (to check it is the object found there). This module counts those
lookups, per name: each is one pickling of that function by this process.
(The child looks them up too, when unpickling, in its own copy of the module:
not counted here.)
"""
import sys
import types

#: name -> how often the parent looked it up on this module
lookups = {}


def _make(name):
    def fn(x=0):
        return (name, x)

    fn.__name__ = fn.__qualname__ = name
    return fn


#: many distinct functions, f0 ... f999
NAMES = ["f%d" % i for i in range(1000)]
for _name in NAMES:
    globals()[_name] = _make(_name)
del _name


class _CountingModule(types.ModuleType):
    def __getattribute__(self, name):
        if name in lookups or (name.startswith("f") and name[1:].isdigit()):
            lookups[name] = lookups.get(name, 0) + 1
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _CountingModule


def function(name):
    """The function called ``name``, fetched without counting a lookup."""
    return vars(sys.modules[__name__])[name]
