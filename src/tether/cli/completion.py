"""`tether completion bash|zsh`: a completion script made from the command line's own parser,
so every command and option there is completed, and nothing that is not."""
from __future__ import annotations

import argparse
import shlex

from .parsing import add_command

FILE_METAVARS = ("FILE", "PATH")


def add_to(commands) -> None:
    p = add_command(commands, "completion", run)
    p.add_argument("shell", choices=["bash", "zsh"], help="The shell to complete for.")


def run(args: argparse.Namespace) -> None:
    """Print a completion script for bash or zsh.

      eval "$(tether completion bash)"                          # in ~/.bashrc
      tether completion bash | sudo tee /etc/bash_completion.d/tether
      eval "$(tether completion zsh)"                           # in ~/.zshrc

    Completes commands, their options, the values of options that take one of a few
    (`demo --client`, ...), files for options that take a file, and after PROGRAM (or --)
    the program and its files.
    """
    script = bash_script(args.top)
    if args.shell == "zsh":
        script = "#compdef tether\nautoload -U +X bashcompinit && bashcompinit\n" + script
    print(script, end="")


def _commands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its words ("exec", "config show"), "" for the top."""
    found = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for words, p in _commands(sub).items():
                    found[f"{name} {words}".strip()] = p
    return found


def bash_script(top: argparse.ArgumentParser) -> str:
    commands = _commands(top)
    words_cases, value_cases = [], []
    for words, p in commands.items():
        options = [o for a in p._actions for o in a.option_strings]
        subs = [name for a in p._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]
        takes_program = any(a.dest == "program" for a in p._actions)
        label = shlex.quote(words) if words else '""'
        words_cases.append(f'        {label}) words={shlex.quote(" ".join(options + subs))}; '
                           f'program={int(takes_program)};;')
        for a in p._actions:
            if not a.option_strings or a.nargs == 0:
                continue
            pattern = "|".join(f"{shlex.quote(words)}:{o}" for o in a.option_strings)
            if a.choices:
                value_cases.append(f'        {pattern}) COMPREPLY=($(compgen -W {shlex.quote(" ".join(a.choices))} '
                                   f'-- "$cur")); return;;')
            elif a.metavar in FILE_METAVARS or (a.metavar or "").endswith("FILE"):
                value_cases.append(f'        {pattern}) COMPREPLY=($(compgen -f -- "$cur")); return;;')
            else:
                value_cases.append(f'        {pattern}) return;;  # a value of its own: nothing to offer')
    return BASH.format(words_cases="\n".join(words_cases), value_cases="\n".join(value_cases))


# The command is the longest run of command words after `tether` (`config show`); a word that
# is no option, no option's value and no command is PROGRAM, after which all is the program's.
BASH = '''# bash completion for tether (made by `tether completion bash`)
_tether() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmd="" words program i
    for ((i = 1; i < COMP_CWORD; i++)); do
        local w=${{COMP_WORDS[i]}}
        if [[ $w == -- ]]; then
            COMPREPLY=($(compgen -c -- "$cur") $(compgen -f -- "$cur")); return
        fi
        _tether_words "$cmd"
        if [[ $w != -* && " $words " == *" $w "* ]]; then
            cmd=${{cmd:+$cmd }}$w
        elif [[ $w != -* && $program == 1 && ${{COMP_WORDS[i-1]}} != -* ]]; then
            COMPREPLY=($(compgen -f -- "$cur")); return  # the program's own arguments
        fi
    done
    case "$cmd:$prev" in
{value_cases}
    esac
    _tether_words "$cmd"
    if [[ $cur == -* || $program == 0 ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$words" -- "$cur") $(compgen -c -- "$cur"))
    fi
}}
_tether_words() {{
    case "$1" in
{words_cases}
        *) words=""; program=0;;
    esac
}}
complete -o default -o bashdefault -F _tether tether
'''
