"""Where a subtitle may break: the cost of a line or cue break between two words, and a cue's best lines.

Guides ask for breaks at natural phrase boundaries: after punctuation, before a conjunction or a
preposition, never between an article and its noun, a preposition and its object, or the parts of a name.
A break's cost says how far it is from that; the cheapest layout wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from batchscribe import segments

SENTENCE_END_COST = 0.0
CLAUSE_END_COST = 1.0
BEFORE_CONJUNCTION_COST = 2.0
PLAIN_COST = 4.0
BAD_BREAK_COST = 12.0  # after an article, preposition or the first part of a name

SENTENCE_ENDS = (*segments.SENTENCE_ENDS, '."', '?"', '!"', ".»", "?»")  # also before a closing quote
CLAUSE_ENDS = (*segments.CLAUSE_ENDS, "-", "–", "—", ")")

# Words a line should not end on (their phrase goes on): articles, determiners, prepositions, pronoun
# subjects, auxiliaries, and conjunctions (a line starts with one, it does not end with one).
_KEEP_WITH_NEXT = {
    "en": "a an the this that these those my your his her its our their to of in on at by for with from into "
    "onto about as than and or but nor so if because when while where who which whose i you he she we they "
    "it is are was were be been has have had do does did will would can could shall should may might must "
    "not no very mr mrs ms dr",
    "fr": "le la les l un une des du de d au aux ce cet cette ces mon ma mes ton ta tes son sa ses notre nos "
    "votre vos leur leurs à a en dans sur sous par pour avec sans chez vers et ou mais que qu qui dont si "
    "je j tu il elle on nous vous ils elles ne n se s me m te t est sont être avoir ai as avez ont très",
    "es": "el la los las lo un una unos unas del al de a en con sin por para sobre entre hacia desde mi mis tu "
    "tus su sus nuestro nuestra y e o u pero que si cuando como yo tú él ella nosotros ellos se me te le "
    "les no es son está están ha han he muy",
    "it": "il lo la i gli le l un uno una un' del dello della dei degli delle al allo alla ai agli alle di a da "
    "in con su per tra fra nel nella nei mio mia tuo tua suo sua e ed o ma che se quando come io tu lui lei "
    "noi voi loro si mi ti ci vi non è sono ha hanno ho molto",
    "de": "der die das den dem des ein eine einen einem einer eines zu von im in an am auf mit für bei aus nach "
    "über unter und oder aber dass wenn weil ich du er sie es wir ihr ist sind hat haben wird werden nicht "
    "sehr mein dein sein ihr unser",
    "pt": "o a os as um uma uns umas do da dos das de em no na nos nas ao aos à às com sem por para pelo pela e "
    "ou mas que se quando como eu tu ele ela nós eles elas me te lhe não é são está muito",
}
KEEP_WITH_NEXT = {language: frozenset(words.split()) for language, words in _KEEP_WITH_NEXT.items()}
# Words a line may well start with: a break before them falls at a phrase boundary.
_BREAK_BEFORE = {
    "en": "and or but because so which who that when while where if although though then",
    "fr": "et ou mais parce car donc qui que quand lorsque si puis alors",
    "es": "y e o u pero porque que quien cuando donde si aunque entonces",
    "it": "e ed o ma perché che chi quando dove se anche poi allora",
    "de": "und oder aber weil dass wenn als ob denn dann",
    "pt": "e ou mas porque que quem quando onde se embora então",
}
BREAK_BEFORE = {language: frozenset(words.split()) for language, words in _BREAK_BEFORE.items()}
_WORD_CHARS = re.compile(r"[\w'’]+")


def _bare(token: str) -> str:
    match = _WORD_CHARS.search(token.lower())
    return match.group(0).replace("’", "'").rstrip("'") if match else ""


def break_cost(before: str, after: str, language: str = "") -> float:
    """How bad a break between token `before` and token `after` is (0: at a sentence end).

    Args:
        before: the word that ends the line (or cue), as displayed.
        after: the word that starts the next one.
        language: the transcript's language code; its word lists judge breaks inside a sentence.
    """
    before, after = before.strip(), after.strip()
    if before.endswith(SENTENCE_ENDS):
        return SENTENCE_END_COST
    if before.endswith(CLAUSE_ENDS) or after.startswith(("(", "-", "–", "—", '"', "«", "“")):
        return CLAUSE_END_COST
    if not before or not after:
        return PLAIN_COST
    lower = _bare(before)
    if lower in KEEP_WITH_NEXT.get(language, ()) or lower.endswith("'"):
        return BAD_BREAK_COST
    if before[0].isupper() and after[0].isupper() and before[0].isalpha():
        return BAD_BREAK_COST  # the parts of a name: "Claire Dupont", "New York"
    if before[-1].isdigit() and after[0].isdigit():
        return BAD_BREAK_COST  # one number
    if _bare(after) in BREAK_BEFORE.get(language, ()):
        return BEFORE_CONJUNCTION_COST
    return PLAIN_COST


def line_lengths(tokens: Sequence[str]) -> list[int]:
    """Prefix character counts: a line of tokens[i:j] is `ends[j] - ends[i]` long, less one for a leading space."""
    ends = [0]
    for token in tokens:
        ends.append(ends[-1] + len(token))
    return ends


def line_length(tokens: Sequence[str], ends: Sequence[int], i: int, j: int) -> int:
    """Characters in the line of tokens[i:j] (its first token's leading space is not shown)."""
    return ends[j] - ends[i] - (1 if tokens[i].startswith(" ") else 0)


def best_lines(
    tokens: Sequence[str], costs: Sequence[float], max_chars: int, max_lines: int, *, reserve: int = 0
) -> tuple[list[int], float] | None:
    """The cheapest way to lay `tokens` out in at most `max_lines` lines of `max_chars` characters.

    Args:
        tokens: the words, each with its leading space (none in scripts without spaces).
        costs: costs[k] is the cost of a break between tokens[k] and tokens[k + 1].
        max_chars: characters a line.
        max_lines: lines at most.
        reserve: characters already taken at the start of the first line (a speaker label).

    Returns:
        The indices where lines after the first start, and the layout's cost (break costs, plus how
        unequal the lines are: a bottom-heavy pair reads best); None when the words do not fit.
    """
    ends = line_lengths(tokens)
    n = len(tokens)
    if reserve + line_length(tokens, ends, 0, n) <= max_chars:
        return [], 0.0
    if max_lines < 2:
        return None
    if max_lines == 2:
        best: tuple[list[int], float] | None = None
        total, first_space = ends[n], 1 if tokens[0].startswith(" ") else 0
        for k in range(1, n):
            top = reserve + ends[k] - first_space
            bottom = total - ends[k] - (1 if tokens[k].startswith(" ") else 0)
            if top > max_chars:
                break  # the top line only grows from here
            if bottom > max_chars:
                continue
            cost = costs[k - 1] + 2.0 * abs(top - bottom) / max_chars + (0.25 if top > bottom else 0.0)
            if best is None or cost < best[1]:
                best = ([k], cost)
        return best
    return _many_lines(tokens, ends, costs, max_chars, max_lines, reserve)


def _many_lines(
    tokens: Sequence[str], ends: Sequence[int], costs: Sequence[float], max_chars: int, max_lines: int, reserve: int
) -> tuple[list[int], float] | None:
    # Fewest lines first, then the cheapest breaks with the least ragged lines (a small DP over start indices).
    n = len(tokens)
    inf = float("inf")
    for lines in range(2, max_lines + 1):
        best: list[list[tuple[float, list[int]]]] = [[(inf, [])] * (n + 1) for _ in range(lines + 1)]
        best[0][0] = (0.0, [])
        for used in range(1, lines + 1):
            for j in range(1, n + 1):
                for i in range(j):
                    cost_i, starts = best[used - 1][i]
                    length = line_length(tokens, ends, i, j) + (reserve if i == 0 else 0)
                    if cost_i == inf or length > max_chars:
                        continue
                    cost = cost_i + (costs[i - 1] if i else 0.0) + ((max_chars - length) / max_chars) ** 2
                    if cost < best[used][j][0]:
                        best[used][j] = (cost, [*starts, i] if i else [])
        if best[lines][n][0] < inf:
            return best[lines][n][1], best[lines][n][0]
    return None
