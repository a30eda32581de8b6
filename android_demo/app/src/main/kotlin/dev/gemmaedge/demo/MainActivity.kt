package dev.gemmaedge.demo

import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.ArrayAdapter
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import dev.gemmaedge.core.BackendChoice
import dev.gemmaedge.core.Settings
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.io.File

/** One screen: model info from the manifest, backend choice, prompt, streamed reply, cancel. */
class MainActivity : AppCompatActivity() {
    private var engine: ChatEngine? = null
    private var generation: Job? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val info = TextView(this)
        val backend = Spinner(this).apply {
            adapter = ArrayAdapter(this@MainActivity, android.R.layout.simple_spinner_item, BackendChoice.values())
        }
        val load = Button(this).apply { text = "Load model" }
        val prompt = EditText(this).apply { hint = "Ask something" }
        val send = Button(this).apply { text = "Send" }
        val cancel = Button(this).apply { text = "Cancel" }
        val output = TextView(this)
        setContentView(ScrollView(this).apply {
            addView(LinearLayout(this@MainActivity).apply {
                orientation = LinearLayout.VERTICAL
                listOf(info, backend, load, prompt, send, cancel, output).forEach { addView(it) }
            })
        })

        fun settings() = Settings(backend = backend.selectedItem as BackendChoice)

        load.setOnClickListener {
            info.text = "Loading ${ChatEngine.DEFAULT_DIR} …"
            lifecycleScope.launch {
                try {
                    engine?.close()
                    val opened = withContext(Dispatchers.IO) {
                        val appDir = File(getExternalFilesDir(null), "gemma-edge")
                        val dir = if (File(appDir, "manifest.json").isFile) appDir else File(ChatEngine.DEFAULT_DIR)
                        ChatEngine.open(dir, settings(), cacheDir)
                    }
                    engine = opened
                    val i = opened.info
                    info.text = "${i.source} · ${i.family} ${i.variant?.uppercase()} · recipe ${i.recipe} · " +
                        "stop tokens ${i.stopTokens.keys.joinToString()} · sha256 verified"
                } catch (e: Exception) {
                    info.text = "Error: ${e.message}"
                }
            }
        }
        send.setOnClickListener {
            val current = engine ?: run { output.text = "Load a model first"; return@setOnClickListener }
            output.text = ""
            generation = lifecycleScope.launch {
                try {
                    current.reply(prompt.text.toString(), settings()).flowOn(Dispatchers.Default)
                        .collect { output.append(it) }
                } catch (e: Exception) {
                    output.append("\n[error: ${e.message}]")
                }
            }
        }
        cancel.setOnClickListener { generation?.cancel() }
    }

    override fun onDestroy() {
        engine?.close()
        super.onDestroy()
    }
}
