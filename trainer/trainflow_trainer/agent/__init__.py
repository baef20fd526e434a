"""The reference agent: multi-turn, tool-using, parallel tool calls, code in the sandbox; knows only an
OpenAI-compatible endpoint."""

from .client import ChatClient, ChatError, ChatReply
from .loop import Agent, Episode
from .tools import BASH_TOOL, EDITOR_TOOL, SUBMIT_TOOL, SWE_TOOLS, ToolBox

__all__ = [
    "BASH_TOOL",
    "EDITOR_TOOL",
    "SUBMIT_TOOL",
    "SWE_TOOLS",
    "Agent",
    "ChatClient",
    "ChatError",
    "ChatReply",
    "Episode",
    "ToolBox",
]
