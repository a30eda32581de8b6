package dev.gemmaedge.core

/**
 * Cuts streamed text at a stop token. Engines stream pieces, and `<end_of_turn>` can arrive
 * split ("<end_of" + "_turn>"): any tail that could still become a stop token is held
 * back, everything before it is shown. Twin of gemma-edge's Python StopTextFilter.
 */
class StopTokenFilter(private val stops: List<String> = listOf("<end_of_turn>", "<eos>")) {
    private var pending = StringBuilder()
    var stopped = false
        private set

    /** Text that is now safe to show; empty once a stop token has been seen. */
    fun feed(piece: String): String {
        if (stopped) return ""
        pending.append(piece)
        val text = pending.toString()
        val cut = stops.map { text.indexOf(it) }.filter { it >= 0 }.minOrNull()
        if (cut != null) {
            stopped = true
            pending = StringBuilder()
            return text.substring(0, cut)
        }
        var hold = 0
        for (s in stops) for (k in 1 until s.length) if (k > hold && text.endsWith(s.substring(0, k))) hold = k
        val shown = text.substring(0, text.length - hold)
        pending = StringBuilder(text.substring(text.length - hold))
        return shown
    }

    /** End of stream: a held-back partial stop token was ordinary text after all. */
    fun finish(): String {
        val rest = if (stopped) "" else pending.toString()
        pending = StringBuilder()
        return rest
    }
}

/** Assembles a streamed reply for the UI: visible text, and whether the model ended its turn. */
class ReplyAssembler(stops: List<String> = listOf("<end_of_turn>", "<eos>")) {
    private val filter = StopTokenFilter(stops)
    private val text = StringBuilder()
    val visible: String get() = text.toString()
    val finished: Boolean get() = filter.stopped

    fun onChunk(chunk: String): String = filter.feed(chunk).also { text.append(it) }
    fun onDone(): String = filter.finish().also { text.append(it) }
}
