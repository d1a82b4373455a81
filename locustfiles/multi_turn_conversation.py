"""Chatbot: conversations whose history grows turn by turn; 85% extend a seen history."""

from kvswarm.scenarios import MultiTurnConversationUser

__all__ = ["MultiTurnConversationUser"]
