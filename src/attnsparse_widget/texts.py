"""Sample texts for sweeps and notebooks: short paragraphs written for this project (plain prose, no dataset)."""

from __future__ import annotations

from typing import Any

SAMPLES: dict[str, str] = {
    "harbour": (
        "The lighthouse keeper wrote in his log every evening. That autumn the storm came from the west, and the "
        "fishing boats stayed in the harbour until the wind turned. On the third day the sea was calm again, the "
        "gulls came back to the rocks, and the first boat went out at dawn with the keeper's youngest son at the "
        "helm. He returned before noon with a full hold and a story about a seal that had followed him all the way "
        "from the point."
    ),
    "river": (
        "In the winter of that year the river froze from bank to bank, and the children of the village walked "
        "across it to school. The miller, who had watched the water for forty years, said he had never seen the "
        "ice so thick. By February the carts were crossing too, loaded with timber and grain. When the thaw came "
        "it came quickly: one warm night, a sound like cannon fire, and by morning the river was moving again."
    ),
    "recipe": (
        "To make the bread, mix the flour and the salt in a large bowl, then add the water and the yeast and stir "
        "until no dry flour remains. Cover the bowl and leave it for two hours, until the dough has doubled. Fold "
        "it onto a floured table, shape it into a round loaf, and let it rest while the oven heats. Bake it for "
        "forty minutes, until the crust is dark and the loaf sounds hollow when you tap the bottom."
    ),
    "letter": (
        "Dear Anna, thank you for your letter and for the photographs of the garden. The roses look wonderful; "
        "mine never did so well. We have had a quiet month here. Tom started his new job at the library, which he "
        "enjoys, although the bus leaves very early. I have been reading the book you sent me, slowly, a chapter "
        "each night. Write again soon and tell me whether you still plan to visit in the spring. With love, Mary."
    ),
}


def sample_texts() -> list[str]:
    """The sample paragraphs (about 80 to 100 tokens each for SmolLM2's tokenizer)."""
    return list(SAMPLES.values())


# Openings the model continues in its own words to make the default training data of ``adapt`` (self-distillation
# on the teacher's own distribution). Varied on purpose: prose, instructions, dialogue, lists, code, arithmetic,
# science and history, so that the adapters are not fitted to one register. None of them is a sample paragraph.
ADAPTATION_PROMPTS: tuple[str, ...] = (
    "The first thing you notice about the old market is",
    "Here is a short story about a girl who finds a key:",
    "To change a flat tyre on a bicycle, you need",
    "Q: Why is the sky blue?\nA:",
    "The French Revolution began in 1789 when",
    "def fibonacci(n):\n    ",
    "Photosynthesis is the process by which",
    "Dear team, I am writing to let you know that",
    "A list of things to pack for a camping trip:\n1.",
    "The main difference between a virus and a bacterium is",
    "In the year 2050, cities will",
    "User: Can you recommend a good book for a long train journey?\nAssistant:",
    "The recipe for a simple tomato soup starts with",
    "Once upon a time, in a village at the edge of a forest,",
    "To solve 3x + 7 = 22, first",
    "The heart pumps blood through the body by",
    "My favourite place in the world is",
    "The committee met on Tuesday to discuss",
    "import numpy as np\n\n# compute the mean of each column\n",
    "Volcanoes form when",
    "The best advice I ever received was",
    "Chess is a game for two players in which",
    "The train was late again, and",
    "Water boils at a lower temperature on a mountain because",
)


def long_text(tokenizer: Any, n_tokens: int) -> str:
    """A text of exactly ``n_tokens`` tokens for ``tokenizer``: the sample paragraphs one after another, repeated
    as often as needed, cut at a token boundary. (Repeated paragraphs reward looking far back: a mask that keeps
    the earlier copy of a sentence lets the model predict it again; a short window cannot.)"""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
    base = "\n\n".join(sample_texts()) + "\n\n"
    ids = tokenizer(base * (1 + n_tokens // 300)).input_ids
    if ids and ids[0] == getattr(tokenizer, "bos_token_id", None):
        ids = ids[1:]
    for extra in range(8):  # decoding and encoding again may merge tokens at the cut: adjust until exact
        text = tokenizer.decode(ids[: n_tokens + extra])
        if len(tokenizer(text).input_ids) == n_tokens:
            return str(text)
    raise ValueError(f"could not cut a text of exactly {n_tokens} tokens with this tokenizer")
