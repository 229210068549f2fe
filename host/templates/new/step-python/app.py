"""{{name}}: a typed wharf step in Python. `describe` tells wharf its parameters and
outputs, so a pipeline that misuses it is refused before anything runs; `run` does the work."""

import wharf_step
from wharf_step import info, text


class Greet:
    def describe(self):
        return (
            info("{{name}}", "Greets someone")
            .param(text("name", "Who to greet", required=True))
            .output("greeting", "What was said")
        )

    def run(self, ctx):
        name = ctx.text("name")
        if not name.strip():
            raise wharf_step.InvalidInput("`name` is empty")
        if name == "nobody":
            wharf_step.annotate("greeting nobody", file="pipeline.yml", title="{{name}}")
        greeting = f"hello, {name}"
        wharf_step.log(greeting)
        return {"greeting": greeting}


Step = wharf_step.export(Greet)
