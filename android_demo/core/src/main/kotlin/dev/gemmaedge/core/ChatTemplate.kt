package dev.gemmaedge.core

/** One chat message; role is system, user, assistant or model. */
data class Message(val role: String, val content: String)

/**
 * Gemma's turn format, identical to gemma-edge's Python `format_chat` and the Jinja
 * template packed into IT models (shared vectors in test_vectors/chat_template.json).
 * A system message has no turn of its own in Gemma: it is folded into the next user turn.
 *
 * The app does not send this text: LiteRT-LM's `Conversation` renders the package's own
 * Jinja template around the raw user text (sending pre-wrapped text would wrap it twice).
 * It stays here as the reference the shared vectors check the Jinja template against, and
 * for what the engine does not do: [COMPLETION_JINJA], the template for PT packages.
 */
object ChatTemplate {
    const val START = "<start_of_turn>"
    const val END = "<end_of_turn>"

    /**
     * Plain completion for PT packages: BOS, then the messages' text with no turn markers.
     * LiteRT-LM renders templates with minijinja, the BOS token as `bos_token`, and a message's
     * `content` either as a string or, for `gemma3` model types, as the Kotlin API's list of
     * parts (`[{"type": "text", "text": ...}]`): the template takes both.
     */
    const val COMPLETION_JINJA = "{{ bos_token }}{% for message in messages %}" +
        "{% if message['content'] is string %}{{ message['content'] }}" +
        "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}" +
        "{% endif %}{% endfor %}"

    /** What [COMPLETION_JINJA] renders to, for tests and for showing the prompt. */
    fun completion(messages: List<Message>, bos: String = "<bos>"): String =
        bos + messages.joinToString("") { it.content }

    fun format(messages: List<Message>, bos: String = "<bos>", addGenerationPrompt: Boolean = true): String {
        val out = StringBuilder(bos)
        var system = ""
        for (m in messages) {
            var role = m.role
            var content = m.content.trim()
            if (role == "system") { system = content; continue }
            if (role == "assistant") role = "model"
            require(role == "user" || role == "model") { "unknown chat role '$role': use system, user or assistant" }
            if (system.isNotEmpty() && role == "user") { content = "$system\n\n$content"; system = "" }
            out.append(START).append(role).append('\n').append(content).append(END).append('\n')
        }
        if (addGenerationPrompt) out.append(START).append("model\n")
        return out.toString()
    }
}
