package dev.gemmaedge.demo

import com.google.ai.edge.litertlm.Backend
import com.google.ai.edge.litertlm.Engine
import com.google.ai.edge.litertlm.EngineConfig
import dev.gemmaedge.core.BackendChoice
import dev.gemmaedge.core.ManifestVerifier
import dev.gemmaedge.core.PackageInfo
import dev.gemmaedge.core.ReplyAssembler
import dev.gemmaedge.core.Settings
import dev.gemmaedge.core.Verification
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import java.io.File

/** A package directory pushed by `adb push`: manifest.json + model.litertlm + tokenizer. */
class ChatEngine private constructor(val info: PackageInfo, private val engine: Engine) : AutoCloseable {

    companion object {
        const val DEFAULT_DIR = "/data/local/tmp/gemma-edge"

        /** Verify hashes, then load. Throws with a message the UI shows as is. */
        fun open(dir: File, settings: Settings, cacheDir: File): ChatEngine {
            val manifest = File(dir, "manifest.json")
            require(manifest.isFile) { "no package at ${dir.path}: adb push the package directory there (see README)" }
            val info = PackageInfo.parse(manifest.readText())
            require(info.kind == "litertlm") { "this is an ${info.kind} package: the app runs .litertlm packages" }
            val verdict = ManifestVerifier.verify(dir, info)
            require(verdict == Verification.Ok) { ManifestVerifier.explain(verdict) }
            val backend = if (settings.backend == BackendChoice.GPU) Backend.GPU else Backend.CPU
            val engine = Engine(EngineConfig(modelPath = File(dir, info.modelFile).path, backend = backend,
                                             cacheDir = cacheDir.path))
            try {
                engine.initialize() // seconds: call from a background coroutine
            } catch (e: OutOfMemoryError) {
                throw IllegalStateException("not enough memory for this model: close other apps or use a smaller recipe (int4)")
            }
            return ChatEngine(info, engine)
        }
    }

    /** Streams visible text; stops at <end_of_turn>/<eos> even if the engine sends them as text. */
    fun reply(userText: String, settings: Settings): Flow<String> = flow {
        val reply = ReplyAssembler()
        engine.createConversation().use { conversation ->
            conversation.sendMessageAsync(settings.promptFor(info, userText)).collect { chunk ->
                val shown = reply.onChunk(chunk.toString())
                if (shown.isNotEmpty()) emit(shown)
                if (reply.finished) return@collect
            }
        }
        val rest = reply.onDone()
        if (rest.isNotEmpty()) emit(rest)
    }

    override fun close() = engine.close()
}
