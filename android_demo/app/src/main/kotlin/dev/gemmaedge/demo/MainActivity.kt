package dev.gemmaedge.demo

import android.os.Bundle
import android.text.InputType
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import dev.gemmaedge.core.BackendChoice
import dev.gemmaedge.core.Settings
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.io.File
import kotlin.concurrent.thread

/** One screen: model info from the manifest, backend and sampling settings, prompt, streamed reply, cancel. */
class MainActivity : AppCompatActivity() {
    private var engine: ChatEngine? = null
    private var generation: Job? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val info = TextView(this)
        val backend = Spinner(this).apply {
            adapter = ArrayAdapter(this@MainActivity, android.R.layout.simple_spinner_item, BackendChoice.entries)
        }
        fun field(hint: String, value: String, type: Int) = EditText(this).apply {
            this.hint = hint; setText(value); inputType = type
        }
        val maxTokens = field("max new tokens", "256", InputType.TYPE_CLASS_NUMBER)
        val topK = field("top-k", "1", InputType.TYPE_CLASS_NUMBER)
        val temperature = field("temperature (0 = greedy)", "0",
                                InputType.TYPE_CLASS_NUMBER or InputType.TYPE_NUMBER_FLAG_DECIMAL)
        val load = Button(this).apply { text = "Load model" }
        val prompt = EditText(this).apply { hint = "Ask something" }
        val send = Button(this).apply { text = "Send" }
        val cancel = Button(this).apply { text = "Cancel" }
        val output = TextView(this)
        setContentView(ScrollView(this).apply {
            addView(LinearLayout(this@MainActivity).apply {
                orientation = LinearLayout.VERTICAL
                listOf(info, backend, maxTokens, topK, temperature, load, prompt, send, cancel, output)
                    .forEach { addView(it) }
            })
        })

        fun settings() = Settings.parse(backend.selectedItem as BackendChoice, maxTokens.text.toString(),
                                        topK.text.toString(), temperature.text.toString())

        load.setOnClickListener {
            info.text = "Loading ${ChatEngine.DEFAULT_DIR} …"
            lifecycleScope.launch {
                try {
                    generation?.cancelAndJoin()
                    val chosen = settings()
                    val old = engine
                    engine = null
                    val opened = withContext(Dispatchers.IO) {
                        old?.close() // idempotent; also stops a running reply
                        val appDir = File(getExternalFilesDir(null), "gemma-edge")
                        val dir = if (File(appDir, "manifest.json").isFile) appDir else File(ChatEngine.DEFAULT_DIR)
                        ChatEngine.open(dir, chosen, cacheDir)
                    }
                    engine = opened
                    val i = opened.info
                    info.text = "${i.source} · ${i.family} ${i.variant?.uppercase()} · recipe ${i.recipe} · " +
                        "stop tokens ${i.stopTokens.keys.joinToString()} · sha256 verified · ${chosen.backend}"
                } catch (e: CancellationException) {
                    throw e
                } catch (e: Exception) {
                    info.text = "Error: ${e.message}"
                }
            }
        }
        send.setOnClickListener {
            val current = engine ?: run { output.text = "Load a model first"; return@setOnClickListener }
            val previous = generation
            generation = lifecycleScope.launch {
                previous?.cancelAndJoin() // one reply at a time: the old one's conversation is closed first
                output.text = ""
                try {
                    val chosen = settings()
                    current.reply(prompt.text.toString(), chosen).flowOn(Dispatchers.Default)
                        .collect { output.append(it) }
                } catch (e: CancellationException) {
                    output.append(" [cancelled]")
                    throw e
                } catch (e: Exception) {
                    output.append("\n[error: ${e.message}]")
                }
            }
        }
        // Cancelling the coroutine ends the flow; ChatEngine then calls conversation.cancelProcess().
        cancel.setOnClickListener { generation?.cancel() }
    }

    override fun onDestroy() {
        generation?.cancel()
        val closing = engine
        engine = null
        // close() cancels a running decode and waits for it: not on the main thread
        if (closing != null) thread(name = "close-engine") { closing.close() }
        super.onDestroy()
    }
}
