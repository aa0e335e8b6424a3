"""Label detection and keyword classification for classification-style prompts.

Pragmatic, not clever: find an explicit list of allowed answers in the prompt
("one of: a, b, c", "categories: ...", "Answer with X, Y or Z", "[a, b, c]",
"a/b/c"), then pick the label whose keywords occur most in the rest of the prompt,
falling back to a hash-based (deterministic) choice.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

__all__ = ["KEYWORDS", "find_labels", "pick_label"]

KEYWORDS: dict[str, frozenset[str]] = {
    name: frozenset(words.split())
    for name, words in {
        "tech": "ai software apple google microsoft chip chips app apps startup computer "
        "computers internet robot robots smartphone iphone android cyber data tech "
        "technology openai cloud quantum laptop gadget semiconductor nvidia processor "
        "hackers silicon browser",
        "technology": "ai software apple google microsoft chip app startup computer internet "
        "robot smartphone iphone cyber tech cloud quantum semiconductor",
        "business": "market markets stock stocks shares economy economic profit profits bank "
        "banks merger acquisition ceo revenue earnings investors investor company companies "
        "trade inflation sales deal billion million firm quarterly retail prices ipo",
        "entertainment": "film films movie movies music album actor actress celebrity tv "
        "show hollywood festival concert netflix series oscar oscars grammy singer band "
        "box office premiere star stars drama comedy",
        "sports": "match game games team teams league cup championship win wins won coach "
        "player players goal goals tournament olympic olympics football soccer tennis nba "
        "nfl season score final finals striker athlete marathon",
        "sport": "match game team league cup championship coach player goal tournament "
        "olympic football soccer tennis",
        "politics": "election elections government president minister parliament senate vote "
        "votes voters policy congress campaign law lawmakers party democrats republicans",
        "science": "research researchers scientists study space nasa planet physics "
        "discovery species climate telescope biology chemistry",
        "health": "health hospital hospitals disease vaccine vaccines doctor doctors medical "
        "virus cancer patients drug drugs covid diet",
        "world": "war country countries international un nations border refugees",
        "positive": "love loved great excellent amazing good happy wonderful best fantastic "
        "enjoyed awesome perfect recommend delightful pleased",
        "negative": "hate hated terrible awful bad worst poor disappointing disappointed "
        "horrible boring broken useless refund angry",
        "neutral": "okay ok average fine mixed neutral",
        "spam": "free winner prize click offer cash urgent",
        "yes": "yes true correct",
        "no": "no not false incorrect",
    }.items()
}

_WORD_RE = re.compile(r"\w+")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")

#: keywords of common labels in Chinese and Japanese, matched as substrings (these
#: scripts do not separate words); each list holds its label too
KEYWORDS_CJK: dict[str, tuple[str, ...]] = {
    name: tuple(words.split())
    for name, words in {
        "技术": "技术 科技 芯片 软件 人工智能 手机 互联网 电脑 苹果 谷歌 微软 数据 机器人 半导体 算法",
        "科技": "科技 技术 芯片 软件 人工智能 手机 互联网 电脑 苹果 谷歌 微软 数据 机器人 半导体 算法",
        "商业": "商业 市场 股票 股市 经济 公司 利润 银行 收购 营收 投资 财报 企业 交易 价格 融资",
        "财经": "财经 市场 股票 股市 经济 公司 利润 银行 收购 营收 投资 财报 企业 交易 价格 融资",
        "娱乐": "娱乐 电影 音乐 明星 演员 歌手 综艺 电视剧 票房 演唱会 导演",
        "体育": "体育 比赛 球队 冠军 足球 篮球 奥运 球员 联赛 决赛 进球 运动员",
        "政治": "政治 选举 政府 总统 部长 议会 投票 政策 法律",
        "健康": "健康 医院 疾病 疫苗 医生 医疗 病毒 癌症 患者 药",
        "正面": "正面 喜欢 好 棒 优秀 满意 推荐 开心 完美 不错 赞",
        "负面": "负面 差 糟糕 讨厌 失望 退款 垃圾 难用 生气 坏",
        "中性": "中性 一般 还行 普通",
        "积极": "积极 喜欢 好 棒 优秀 满意 推荐 开心 完美 不错 赞",
        "消极": "消极 差 糟糕 讨厌 失望 退款 垃圾 难用 生气 坏",
        "テクノロジー": "テクノロジー 技術 ソフトウェア スマホ 半導体 人工知能 アプリ",
        "スポーツ": "スポーツ 試合 優勝 サッカー 野球 選手 リーグ",
        "エンタメ": "エンタメ 映画 音楽 俳優 歌手 ドラマ",
        "ビジネス": "ビジネス 市場 株価 経済 企業 利益 銀行 買収",
    }.items()
}
_INTRO_RE = re.compile(
    r"(?:\bone\s+of(?:\s+[\w-]+){0,3}\s*:|"
    r"\b(?:categories|labels|options|classes|choices|classification)\s*:|"
    r"\b(?:choose|pick|select)\s+(?:from|between|among)\b(?:\s+[\w-]+){0,2}\s*:?|"
    r"\b(?:answer|respond|reply)\s+(?:only\s+)?with\b(?:\s+either)?\s*:?|"
    r"\bone\s+of\b)",
    re.IGNORECASE,
)
_BRACKET_RE = re.compile(r"(?<!\[)[\[({]([^\[\](){}\n]{3,200})[\])}](?!\])")
_SLASH_RE = re.compile(r"\b[\w-]+(?:\s*[/|]\s*[\w-]+)+\b")
_SPLIT_RE = re.compile(r"\s*(?:,|/|\||;|、|，|；|\bor\b|\band\b|或者|或)\s*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?](?:\s|$)|\n")
_BULLET_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$")
_CUE_RE = re.compile(
    r"classif|label|categor|sentiment|answer|choose|pick|select|respond|"
    # other languages: Chinese, Japanese, Korean, Spanish, French, German, Portuguese, Russian
    r"分类|分類|类别|類別|类型|類型|选项|選項|之一|标签|標籤|情感|情绪|カテゴリ|ラベル|のいずれか|분류|"
    r"카테고리|clasific|categoría|catégorie|étiquette|kategorie|klassifi|classifica|категор|класс",
    re.I,
)
#: a list after a colon on one line, in any script: "类别之一：技术、商业、其他", "Kategorien: a, b"
_COLON_LIST_RE = re.compile(r"[:：]\s*([^\n:：]{2,200}?[、，,;；/|][^\n:：]{1,200})$", re.MULTILINE)
_STRIP = " \t'\"`*_.:;!?。：；！？「」“”"


def _clean(item: str) -> str:
    item = item.strip(_STRIP)
    for prefix in ("or ", "and ", "either "):
        if item.lower().startswith(prefix):
            item = item[len(prefix) :].strip(_STRIP)
    return item


def _as_labels(raw: str) -> list[str] | None:
    items = [_clean(part) for part in _SPLIT_RE.split(raw)]
    labels: list[str] = []
    seen: set[str] = set()
    for item in items:
        if not item:
            continue
        if len(item) > 40 or len(item.split()) > 4 or (_CJK_RE.search(item) and len(item) > 12):
            return None
        if item.lower() not in seen:
            seen.add(item.lower())
            labels.append(item)
    return labels if len(labels) >= 2 else None


def _after_intro(text: str, end: int) -> str:
    rest = text[end:]
    stripped = rest.lstrip(" \t")
    if stripped.startswith("\n") or not stripped.strip():
        # a bulleted list on the following lines
        bullets: list[str] = []
        for line in rest.lstrip(" \t").splitlines()[1:]:
            match = _BULLET_RE.match(line)
            if match is None:
                if bullets or line.strip():
                    break
                continue
            bullets.append(match.group(1))
        return ",".join(bullets)
    cut = _SENTENCE_END_RE.search(stripped)
    return stripped[: cut.start()] if cut else stripped


def find_labels(text: str) -> list[str] | None:
    """The allowed answers listed in ``text``, or None when there is no such list."""
    for match in _INTRO_RE.finditer(text):
        labels = _as_labels(_after_intro(text, match.end()))
        if labels:
            return labels
    if not _CUE_RE.search(text):
        return None
    for match in _COLON_LIST_RE.finditer(text):
        labels = _as_labels(match.group(1))
        if labels:
            return labels
    for match in _BRACKET_RE.finditer(text):
        labels = _as_labels(match.group(1))
        if labels:
            return labels
    for match in _SLASH_RE.finditer(text):
        labels = _as_labels(match.group(0))
        if labels and len(labels) >= 2:
            return labels
    return None


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


@functools.lru_cache(maxsize=512)
def _vocabulary_index(labels: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """word -> indexes of the labels whose vocabulary (keywords + own name) holds it."""
    index: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        for word in KEYWORDS.get(label, frozenset()) | {label}:
            index.setdefault(word, []).append(position)
    return {word: tuple(positions) for word, positions in index.items()}


def _score_cjk(labels: Sequence[str], text: str, scores: list[int], listed: bool) -> None:
    """Add substring keyword hits for labels with CJK keywords (a listed label's own name,
    present once as a choice, is not evidence)."""
    for position, label in enumerate(labels):
        keywords = KEYWORDS_CJK.get(label.strip())
        if not keywords:
            continue
        hits = sum(text.count(word) for word in keywords)
        if listed:
            hits -= sum(1 for other in labels for word in keywords if word in other)
        scores[position] += max(hits, 0)


def pick_label(labels: Sequence[str], text: str, key: str, *, listed: bool = True) -> str:
    """The label best supported by keywords in ``text``; ties broken by ``key`` hash.

    ``listed`` says the labels themselves appear once in ``text`` (as the list of
    choices), so one occurrence of each is not evidence.
    """
    lowered = tuple(label.lower() for label in labels)
    index = _vocabulary_index(lowered)
    scores = [0] * len(labels)
    seen: dict[str, int] = {}
    for word in _words(text):
        seen[word] = seen.get(word, 0) + 1
        hits = index.get(word)
        if hits:
            for position in hits:
                scores[position] += 1
        if word.endswith("s") and len(word) > 3:
            for position in index.get(word[:-1], ()):
                scores[position] += 1
    if listed:
        # the list of labels itself (present once in the prompt) is not evidence
        for word in {w for label in lowered for w in _words(label)}:
            if seen.get(word):
                for position in index.get(word, ()):
                    scores[position] -= 1
    if _CJK_RE.search(text):
        _score_cjk(labels, text, scores, listed)
    best = max(scores)
    candidates = [label for label, score in zip(labels, scores, strict=True) if score == best]
    if len(candidates) == 1:
        return candidates[0]
    digest = hashlib.sha256(key.encode()).digest()
    return candidates[int.from_bytes(digest[:8], "big") % len(candidates)]
