"""The reference agent: multi-turn, tool-using, parallel tool calls, code in the sandbox; knows only an
OpenAI-compatible endpoint."""

from .client import ChatClient, ChatError, ChatReply
from .loop import Agent, Episode
from .tools import ToolBox

__all__ = ["Agent", "ChatClient", "ChatError", "ChatReply", "Episode", "ToolBox"]
