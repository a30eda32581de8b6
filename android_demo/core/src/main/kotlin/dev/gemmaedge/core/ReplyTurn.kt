package dev.gemmaedge.core

/**
 * One streamed reply, from the first chunk to the end of the stream, and what the app must
 * tell the engine when it leaves the stream.
 *
 * LiteRT-LM's `Conversation.sendMessageAsync(text): Flow<Message>` is a `callbackFlow` whose
 * `awaitClose {}` does nothing: when the collector stops (stop marker, cancelled coroutine,
 * an exception downstream) the native decode goes on until it hits its own stop token or
 * the token limit. So the app ends the stream at the chunk that completes a stop marker,
 * and calls `conversation.cancelProcess()` whenever [engineMayStillRun] is true.
 */
class ReplyTurn(stops: List<String> = listOf("<end_of_turn>", "<eos>")) {

    enum class End {
        /** The text contained a stop marker: the stream was ended there. */
        STOP_MARKER,
        /** The engine finished the reply itself (its own stop token or the token limit). */
        ENGINE_DONE,
        /** The user (or the app closing) cancelled the reply. */
        CANCELLED,
        /** The engine reported an error: it has stopped. */
        FAILED,
    }

    /** What one chunk gives: the text to show now, and whether to end the stream here. */
    data class Step(val text: String, val endStream: Boolean)

    private val reply = ReplyAssembler(stops)

    var end: End? = null
        private set

    /** All text shown so far. */
    val visible: String get() = reply.visible

    /**
     * Feeds one chunk. The chunk that completes a stop marker ends the stream: its text
     * before the marker is shown and nothing after it; no later chunk is read.
     */
    fun onChunk(chunk: String): Step {
        if (end != null) return Step("", true)
        val shown = reply.onChunk(chunk)
        if (reply.finished) end = End.STOP_MARKER
        return Step(shown, end != null)
    }

    /** The stream ended without an error; returns the held-back tail (a partial marker that was text). */
    fun onStreamEnd(): String {
        if (end != null) return ""
        end = End.ENGINE_DONE
        return reply.onDone()
    }

    /** Cancelled before the reply ended (a reply already ended at its stop marker stays so). */
    fun onCancelled() {
        if (end == null) end = End.CANCELLED
    }

    fun onFailed() {
        if (end == null) end = End.FAILED
    }

    /**
     * True when the native decode may still be running after the app leaves the stream:
     * ended at a stop marker, cancelled, or left for any other reason before the engine said
     * done. Then the app calls `cancelProcess()` before `close()`.
     */
    val engineMayStillRun: Boolean
        get() = end != End.ENGINE_DONE && end != End.FAILED

    /**
     * Reads [chunks] the way the app's flow does (`transformWhile`): stops pulling at the
     * chunk that ends the stream. For callers and tests without coroutines.
     */
    fun consume(chunks: Iterator<String>, show: (String) -> Unit) {
        while (chunks.hasNext()) {
            val step = onChunk(chunks.next())
            if (step.text.isNotEmpty()) show(step.text)
            if (step.endStream) return
        }
        val rest = onStreamEnd()
        if (rest.isNotEmpty()) show(rest)
    }
}

/** `close()` that runs its action once; LiteRT-LM's `Engine.close()` throws on a second call. */
class CloseOnce(private val action: () -> Unit) : AutoCloseable {
    @Volatile
    var closed = false
        private set

    /** Runs the action the first time; later calls do nothing. Returns whether it ran now. */
    fun closeNow(): Boolean {
        synchronized(this) {
            if (closed) return false
            closed = true
        }
        action()
        return true
    }

    override fun close() {
        closeNow()
    }
}
