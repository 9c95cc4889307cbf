"""imxlate: unpaired image-to-image translation from the command line and from Python."""
__version__ = "0.1.0"


def load(path=None, to: str | None = None, device: str = "auto"):
    """Load a model file (or find one that knows domain `to`) -> a Translator with .translate()."""
    from .translate import Translator

    return Translator.open(path, to=to, device=device)
