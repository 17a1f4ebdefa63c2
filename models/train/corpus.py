"""The kjv-chat training data: verses parsed from `bible -l0` output, turned into a token stream
of plain passages and one- or two-turn chats, every document ending with `<|end|>` (the EOS).

Document kinds (share of documents):
- passage (35%): 1-5 consecutive verses, one a line — what /v1/completions continues;
- topic (30%): user asks about a word ("What does the Bible say about mercy?"), the assistant
  answers with a verse that contains it;
- reference (20%): user names a verse ("John 3:16", "Recite Psalms 23:1."), assistant recites it;
- finish (10%): user gives a verse's first words ("Finish this verse: In the beginning"),
  assistant gives the whole verse;
- about (5%): a handful of hand-written greetings and "who are you" replies (HELLO below).
15% of chats start with a system message, 10% have a second turn.

Every piece (a verse, a question) is encoded once; a document is the concatenation of pieces and
special tokens, which equals encoding its whole text because GPT-2 pre-tokenization never joins
across a special token or a lone "\n" between non-space characters. `check_assembly` asserts it.
"""
import random
import re

import numpy as np

END, SYSTEM, USER, ASSISTANT, BEGIN = '<|end|>', '<|system|>', '<|user|>', '<|assistant|>', '<|begin|>'
SPECIALS = [END, SYSTEM, USER, ASSISTANT, BEGIN]

# Jinja chat template (HF `chat_template`); `render_chat` is its Python twin.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('kjv-chat knows the roles system, user and assistant, not ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def render_chat(messages, add_generation_prompt):
    out = BEGIN + ''.join(f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages)
    return out + (f'{ASSISTANT}\n' if add_generation_prompt else '')


TOPIC_QUESTIONS = [
    'What does the Bible say about {w}?', 'Tell me about {w}.', 'Give me a verse about {w}.',
    'Say something about {w}.', 'I want to hear about {w}.', 'Speak to me of {w}.', '{W}?',
    'What is {w}?', 'Tell me a verse with the word {w}.', 'A verse about {w}, please.',
    'Teach me about {w}.', '{w}',
]
REF_QUESTIONS = ['{r}', 'Recite {r}.', 'What does {r} say?', 'Read me {r}.', 'Quote {r}.', '{r}?']
FINISH_QUESTIONS = ['Finish this verse: {p}', 'Continue: {p}', 'Complete the verse: {p}', '{p}...']
SYSTEM_PROMPTS = [
    'You are a helpful assistant.', 'You are a helpful assistant. Answer briefly.',
    'You answer with verses from the King James Bible.', 'You are a friendly assistant.',
]
ABOUT = ('I am kjv-chat, a small language model trained only on the King James Bible. '
         'Ask me about a word, such as love or light, or name a verse, such as John 3:16.')
HELLO = [
    ('Hello', 'Peace be unto you. ' + ABOUT), ('Hi', 'Peace be unto you. ' + ABOUT),
    ('Hello!', 'Peace be unto you. ' + ABOUT), ('Good morning', 'Peace be unto you. ' + ABOUT),
    ('Who are you?', ABOUT), ('What are you?', ABOUT), ('What can you do?', ABOUT),
    ('Help', ABOUT), ('Thank you', 'The LORD bless thee, and keep thee.'),
    ('Thanks!', 'The LORD bless thee, and keep thee.'), ('Goodbye', 'Grace be with you all. Amen.'),
]
STOP = set('''the and of to that in he shall unto for his a lord they be is him not them it with all thou thy
was which my me said but ye their have will thee from as are when this out were upon by you up there hath then
had into on her one we before your also s day an so against shalt if at let go us saying made went even no do
now behold saith therefore every these because after our things or hast o say make may over did what she who
among thine thereof did hast been came come doth thus neither nor yea why whom whose shalt wherefore
'''.split())


def parse_bible(path):
    """[(reference, text)] in order, from `bible -l0` output ("Book N" headings, "  V text" verses)."""
    verses, chapter = [], None
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.rstrip('\n')
            m = re.match(r'^ +(\d+) (.+)$', line)
            if m:
                if chapter is None:
                    raise ValueError(f'{path}: verse before any chapter heading: {line!r}')
                verses.append((f'{chapter}:{m.group(1)}', m.group(2).strip()))
            elif line.strip():
                chapter = line.strip()
    return verses


class Documents:
    """Samples documents (token id lists) from the pre-encoded pieces."""

    def __init__(self, verses, enc, seed=0, max_topics=3000):
        self.rng = random.Random(seed)
        self.enc = enc
        sp = enc.specials
        self.end, self.system, self.user, self.assistant, self.begin = (sp[s] for s in SPECIALS)
        self.nl = enc.encode('\n')
        assert len(self.nl) == 1, 'the vocabulary must hold "\\n" as one token'
        self.verses = verses
        self.verse_ids = [enc.encode(t) for _, t in verses]
        self.refs = [[enc.encode(q.format(r=r)) for q in REF_QUESTIONS] for r, _ in verses]
        self.finish = []
        for _, t in verses:
            words = t.split(' ')
            k = max(2, min(len(words) - 1, self.rng.randint(2, 6)))
            q = self.rng.choice(FINISH_QUESTIONS).format(p=' '.join(words[:k]))
            self.finish.append(enc.encode(q))
        by_word = {}
        for i, (_, t) in enumerate(verses):
            for w in set(re.findall(r'[a-z]+', t.lower())):
                if len(w) >= 4 and w not in STOP:
                    by_word.setdefault(w, []).append(i)
        common = sorted((w for w, v in by_word.items() if len(v) >= 3), key=lambda w: -len(by_word[w]))[:max_topics]
        self.topics = [(w, by_word[w], [enc.encode(q.format(w=w, W=w.capitalize())) for q in TOPIC_QUESTIONS]) for w in common]
        self.system_ids = [enc.encode(s) for s in SYSTEM_PROMPTS]
        self.hello = [(enc.encode(q), enc.encode(a)) for q, a in HELLO]

    def _turn(self, role, ids):
        return [role, *self.nl, *ids, self.end, *self.nl]

    def _qa(self):
        r, rng = self.rng.random(), self.rng
        if r < 0.30 / 0.65:
            w, idx, qs = rng.choice(self.topics)
            return rng.choice(qs), self.verse_ids[rng.choice(idx)]
        if r < 0.50 / 0.65:
            i = rng.randrange(len(self.verses))
            return rng.choice(self.refs[i]), self.verse_ids[i]
        if r < 0.60 / 0.65:
            i = rng.randrange(len(self.verses))
            return self.finish[i], self.verse_ids[i]
        return rng.choice(self.hello)

    def chat(self):
        doc = [self.begin]
        if self.rng.random() < 0.15:
            doc += self._turn(self.system, self.rng.choice(self.system_ids))
        for turn in range(2 if self.rng.random() < 0.10 else 1):
            q, a = self._qa()
            doc += self._turn(self.user, q)
            doc += [self.assistant, *self.nl, *a, self.end]
            if turn == 0:
                doc += self.nl  # the template writes "\n" after each <|end|> that has a successor
        if doc[-1] != self.end:
            doc.pop()
        return doc

    def passage(self):
        i = self.rng.randrange(len(self.verses))
        n = self.rng.randint(1, 5)
        doc = [self.begin]
        for j in range(i, min(i + n, len(self.verses))):
            if j > i:
                doc += self.nl
            doc += self.verse_ids[j]
        return doc + [self.end]

    def sample(self):
        return self.passage() if self.rng.random() < 0.35 else self.chat()

    def stream(self, num_tokens):
        """A token stream of at least `num_tokens` ids (int32), documents back to back."""
        out = np.empty(num_tokens + 4096, dtype=np.int32)
        n = 0
        while n < num_tokens:
            d = self.sample()
            out[n:n + len(d)] = d
            n += len(d)
        return out[:n]


def check_assembly(docs, n=300):
    """Asserts that sampled documents equal the encoding of their own text; returns (text, ids) pairs."""
    pairs = []
    for _ in range(n):
        ids = docs.sample()
        text = docs.enc.decode(ids)
        again = docs.enc.encode_with_specials(text)
        assert again == ids, f'assembled ids differ from encoding the text: {text!r}'
        pairs.append((text, ids))
    return pairs
