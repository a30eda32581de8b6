package dev.gemmaedge.demo

import com.google.ai.edge.litertlm.Backend
import com.google.ai.edge.litertlm.Conversation
import com.google.ai.edge.litertlm.ConversationConfig
import com.google.ai.edge.litertlm.Engine
import com.google.ai.edge.litertlm.EngineConfig
import com.google.ai.edge.litertlm.ExperimentalApi
import com.google.ai.edge.litertlm.ExperimentalFlags
import com.google.ai.edge.litertlm.LiteRtLmJniException
import com.google.ai.edge.litertlm.SamplerConfig
import dev.gemmaedge.core.BackendChoice
import dev.gemmaedge.core.CloseOnce
import dev.gemmaedge.core.EngineFailure
import dev.gemmaedge.core.ManifestVerifier
import dev.gemmaedge.core.PackageInfo
import dev.gemmaedge.core.ReplyTurn
import dev.gemmaedge.core.Settings
import dev.gemmaedge.core.Verification
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.emitAll
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.transformWhile
import java.io.File
import kotlin.coroutines.cancellation.CancellationException

/**
 * A package directory pushed by `adb push` (manifest.json + model.litertlm + tokenizer),
 * loaded in LiteRT-LM. The only class that touches the engine; the decisions (stop marker,
 * when to cancel, sampler values, templates, messages) are in the tested core.
 */
class ChatEngine private constructor(
    val info: PackageInfo,
    private val engine: Engine,
    private val backend: BackendChoice,
) : AutoCloseable {

    private val lock = Any()
    private var active: Conversation? = null
    private val closer = CloseOnce {
        synchronized(lock) {
            active?.let { finish(it, cancel = true) }
            engine.close()
        }
    }

    companion object {
        const val DEFAULT_DIR = "/data/local/tmp/gemma-edge"

        /** Verify hashes, then load (seconds: call from a background thread). Throws with a message the UI shows. */
        fun open(dir: File, settings: Settings, cacheDir: File): ChatEngine {
            val manifest = File(dir, "manifest.json")
            require(manifest.isFile) { "no package at ${dir.path}: adb push the package directory there (see README)" }
            val info = PackageInfo.parse(manifest.readText())
            require(info.kind == "litertlm") { "this is an ${info.kind} package: the app runs .litertlm packages" }
            val verdict = ManifestVerifier.verify(dir, info)
            require(verdict == Verification.Ok) { ManifestVerifier.explain(verdict) }
            val backend = if (settings.backend == BackendChoice.GPU) Backend.GPU() else Backend.CPU()
            val engine = Engine(EngineConfig(modelPath = File(dir, info.modelFile).path, backend = backend,
                                             cacheDir = cacheDir.path))
            try {
                engine.initialize()
            } catch (e: LiteRtLmJniException) {
                // initialize() failed: the engine holds nothing, and close() on it would throw
                throw IllegalStateException(EngineFailure.explain(e.message, settings.backend), e)
            } catch (e: OutOfMemoryError) {
                throw IllegalStateException(EngineFailure.explain("out of memory", settings.backend), e)
            }
            return ChatEngine(info, engine, settings.backend)
        }
    }

    /**
     * Streams the visible text of one reply to [userText]. The raw text goes to the engine:
     * `Conversation` renders the package's chat template around it (PT packages get the core's
     * completion template instead). Ends at a stop marker; cancelling the collector, or a stop
     * marker, stops the native decode with `cancelProcess()`.
     */
    fun reply(userText: String, settings: Settings): Flow<String> = flow {
        val turn = ReplyTurn(info.stopTokens.keys.toList().ifEmpty { listOf("<end_of_turn>", "<eos>") })
        val conversation = startConversation(settings)
        try {
            emitAll(conversation.sendMessageAsync(userText).transformWhile { message ->
                val step = turn.onChunk(message.toString())
                if (step.text.isNotEmpty()) emit(step.text)
                !step.endStream
            })
            val rest = turn.onStreamEnd()
            if (rest.isNotEmpty()) emit(rest)
        } catch (e: CancellationException) {
            turn.onCancelled()
            throw e
        } catch (e: LiteRtLmJniException) {
            turn.onFailed()
            throw IllegalStateException(EngineFailure.explain(e.message, backend), e)
        } finally {
            synchronized(lock) {
                if (active === conversation) finish(conversation, cancel = turn.engineMayStillRun)
            }
        }
    }

    /** One conversation per reply: a cancelled decode leaves no half turn in the next one's history. */
    @OptIn(ExperimentalApi::class)
    @Suppress("DEPRECATION") // overwritePromptTemplate: deprecated upstream after 0.15 for ConversationConfig.chatTemplate
    private fun startConversation(settings: Settings): Conversation = synchronized(lock) {
        check(!closer.closed) { "the model was closed: load it again" }
        active?.let { finish(it, cancel = true) }
        val plan = settings.sampler()
        val config = ConversationConfig(
            samplerConfig = SamplerConfig(topK = plan.topK, topP = plan.topP, temperature = plan.temperature,
                                          seed = plan.seed),
            maxOutputToken = settings.maxOutputTokens,
        )
        // Read once by createConversation(); null keeps the package's own template.
        ExperimentalFlags.overwritePromptTemplate = settings.templateOverride(info)
        try {
            engine.createConversation(config).also { active = it }
        } finally {
            ExperimentalFlags.overwritePromptTemplate = null
        }
    }

    /** Called with [lock] held. */
    private fun finish(conversation: Conversation, cancel: Boolean) {
        if (cancel && conversation.isAlive) runCatching { conversation.cancelProcess() }
        if (conversation.isAlive) runCatching { conversation.close() }
        if (active === conversation) active = null
    }

    /** Idempotent: a failed load followed by onDestroy, or two taps, close the engine once. */
    override fun close() = closer.close()
}
