"""Generated prompts of the four kinds issue 12 found the old model rating a
tier or more too low: multiple-choice exam questions, multi-step reasoning
puzzles, hard prompts written the way real users write them, and long
documents followed by an instruction. Written here from templates, not taken
from any benchmark, so no test can pass by recognising a training source.
Each generator takes a random.Random and returns one prompt."""

from __future__ import annotations

SUBJECTS = {
    "biology": ("Which process in the mitochondrion produces most of a cell's ATP?",
                ["Glycolysis", "Oxidative phosphorylation", "Fermentation", "Transcription"]),
    "economics": ("If the central bank raises the reserve requirement, what happens to the money "
                  "multiplier?", ["It rises", "It falls", "It is unchanged", "It becomes negative"]),
    "law": ("Under the doctrine of promissory estoppel, which element must the promisee show?",
            ["Detrimental reliance", "Consideration", "A signed writing", "Mutual mistake"]),
    "physics": ("A block slides down a frictionless incline of angle 30 degrees. What is its "
                "acceleration along the incline?", ["g", "g/2", "g times sqrt(3)/2", "2g"]),
    "philosophy": ("Which claim best states the problem of induction as Hume posed it?",
                   ["Deduction is invalid", "Past regularities do not justify predictions",
                    "Perception is unreliable", "Causes precede effects"]),
    "medicine": ("A patient on warfarin starts a course of rifampin. What happens to the INR?",
                 ["It rises", "It falls", "It is unchanged", "It becomes undetectable"]),
    "accounting": ("Which adjustment converts accrual-basis net income to cash from operations "
                   "for an increase in accounts receivable?", ["Add it", "Subtract it",
                                                              "Ignore it", "Double it"]),
    "chemistry": ("What is the hybridisation of the central atom in sulfur hexafluoride?",
                  ["sp3", "sp3d", "sp3d2", "sp2"]),
}
CHOICE_STYLES = ("{letter}. {text}", "({letter}) {text}", "{letter}) {text}")


def exam_question(rng) -> str:
    subject = rng.choice(sorted(SUBJECTS))
    stem, options = SUBJECTS[subject]
    options = options[:]
    rng.shuffle(options)
    style = rng.choice(CHOICE_STYLES)
    lines = [style.format(letter="ABCD"[i], text=t) for i, t in enumerate(options)]
    intro = rng.choice(("", f"The following is a question about {subject}.\n\n", "Question: "))
    outro = rng.choice(("", "\nAnswer:", "\nChoose the best answer."))
    return intro + stem + "\n" + "\n".join(lines) + outro


NAMES = ("Ana", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana")
RELATIONS = ("sits immediately left of", "is taller than", "finished before", "is older than")


def reasoning_puzzle(rng) -> str:
    people = rng.sample(NAMES, rng.randint(4, 6))
    relation = rng.choice(RELATIONS)
    facts = [f"{a} {relation} {b}." for a, b in zip(people, people[1:])]
    rng.shuffle(facts)
    extra = rng.choice(("", f" Exactly one of {people[0]} and {people[-1]} wears red.",
                        f" If {people[1]} is not first, then {people[2]} is last."))
    question = rng.choice((f"Who is in position {rng.randint(2, len(people))}?",
                           "Which of the following must be true?",
                           f"How many people are between {people[0]} and {people[-1]}?"))
    return (f"{len(people)} people stand in a row. " + " ".join(facts) + extra +
            f" {question} Think it through step by step.")


SYSTEMS = ("a Kubernetes cluster behind an nginx ingress", "a Postgres 15 primary with two replicas",
           "a React app with server-side rendering", "a Kafka pipeline feeding a Spark job",
           "an iOS app syncing with a GraphQL backend", "a Rust service using tokio")
SYMPTOMS = ("latency spikes every few minutes under load", "memory grows until the pods are killed",
            "some writes are lost after a failover", "the first request after deploy times out",
            "messages are processed twice after a rebalance")
ASKS = ("What are the likely causes, how would you confirm each one, and what would you change?",
        "Walk me through how to debug this and propose a fix, with the trade-offs of each option.",
        "Design a fix that works without downtime and explain why it is safe.",
        "Compare two approaches to solve it and recommend one for a small team.")


def hard_chat_prompt(rng) -> str:
    lead = rng.choice(("I run", "We have", "My team maintains", "At work I'm responsible for"))
    return (f"{lead} {rng.choice(SYSTEMS)} and {rng.choice(SYMPTOMS)}. "
            f"{rng.choice(('We already tried restarting and scaling up.', 'Logs show nothing obvious.', ''))} "
            f"{rng.choice(ASKS)}")


SENTENCES = (
    "Revenue for the quarter rose four percent, driven mostly by renewals in the enterprise segment.",
    "The committee heard evidence that the new rule would delay permits by several weeks.",
    "Participants were randomly assigned to receive either the intervention or usual care.",
    "The tenant shall give written notice no later than sixty days before the end of the term.",
    "She closed the door behind her and listened to the rain against the window for a long time.",
    "Latency at the ninety-ninth percentile doubled after the configuration change on Tuesday.",
    "The witness said he had not seen the defendant on the night in question.",
    "Our hiring plan assumes two senior engineers join before the platform migration starts.",
)
INSTRUCTIONS = ("Summarize the document above.", "What are the main decisions, and who owns each?",
                "Answer based on the text: what changed and why?",
                "List the risks the document mentions and how each is addressed.")


def long_document_task(rng, chars: int) -> str:
    parts, size = [], 0
    while size < chars:
        paragraph = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 8)))
        parts.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(parts) + "\n\n" + rng.choice(INSTRUCTIONS)
